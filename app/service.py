"""The resources one worker process runs with, opened and closed as one `async with`.

Start: database (embedded if no DSN), pool, migrations, the batch writer with its spool and
drainer, the copy buffer. Stop, in uvicorn's order: intake stops, buffered batches become
durable, the drainer stops, the pool closes, an embedded PostgreSQL started here stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from asyncpg import Pool

from app import retention, storage
from app.batch_writer import BatchWriter
from app.config import Config
from app.copy_buffer import CopyBuffer
from app.embedded import EmbeddedPostgres
from app.metrics import Metrics, SnapshotWriter
from app.metrics_endpoint import metrics_directory
from app.replay import SpoolDrainer
from app.spool import worker_spools

logger = logging.getLogger(__name__)

READY_PING_TIMEOUT = 1.0  # seconds


@dataclass(frozen=True, slots=True)
class Service:
    config: Config
    pool: Pool
    copy_buffer: CopyBuffer
    writer: BatchWriter

    async def ready(self) -> tuple[bool, str]:
        """Whether this worker should get traffic, and why not."""
        if self.copy_buffer.full:
            return False, "buffer full"
        spool = self.writer.spool
        if spool is not None and spool.size >= spool.max_bytes:
            return False, "spool full"
        try:
            await storage.ping(self.pool, READY_PING_TIMEOUT)
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            return False, f"database unreachable: {exc}"
        return True, "ready"


@asynccontextmanager
async def running(config: Config, metrics: Metrics) -> AsyncIterator[Service]:
    async with _database_url(config) as dsn:
        # One connection beyond the flushes, so readiness checks never queue behind a batch.
        pool = await storage.create_pool(
            dsn, min_size=config.flush_slots, max_size=config.pool_size + 1
        )
        try:
            async with pool.acquire() as connection:
                await storage.migrate(connection)
            maintenance = asyncio.get_running_loop().create_task(
                retention.run_periodically(pool, config.retention_days, metrics)
            )
            try:
                async with (
                    _writing(config, pool, metrics) as writer,
                    publishing(config, metrics) as publish,
                ):
                    copy_buffer = CopyBuffer(config, writer.write, metrics)
                    metrics.gauge("buffer_rows", lambda: copy_buffer.rows)
                    yield Service(config, pool, copy_buffer, writer)
                    left = await copy_buffer.close(config.shutdown_timeout_s)
                    if left:
                        logger.error(
                            "%d requests not stored at shutdown",
                            left,
                            extra={"action": "shutdown_unflushed", "requests": left},
                        )
                    publish()  # the last totals, with what shutdown flushed
            finally:
                await _cancelled(maintenance)
        finally:
            await pool.close()


@asynccontextmanager
async def _database_url(config: Config) -> AsyncIterator[str]:
    """The configured DSN, else that of the embedded server in the data directory.

    `serve` starts the embedded server before its workers and passes its DSN on; only a bare
    `uvicorn --factory app.asgi:create_app` gets here without one. A server this process
    started is stopped again when it exits (one it found running is left alone).
    """
    if config.database_url:
        yield config.database_url
        return
    embedded = EmbeddedPostgres(Path(config.data_dir))
    dsn = await asyncio.to_thread(embedded.start)
    try:
        yield dsn
    finally:
        await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def _writing(config: Config, pool: Pool, metrics: Metrics) -> AsyncIterator[BatchWriter]:
    """The batch writer, with this worker's spool and its drainer when the spool is on."""
    store = functools.partial(storage.write_batch, pool)
    probe = functools.partial(storage.ping, pool, READY_PING_TIMEOUT)
    flush_timeout = config.flush_timeout_ms / 1000
    if not config.spool_max_bytes:
        writer = BatchWriter(store, probe, None, flush_timeout, metrics)
        metrics.gauge("storage_up", lambda: 0 if writer.storage_down else 1)
        yield writer
        return
    base = Path(config.data_dir) / "spool"
    mine, orphans = await asyncio.to_thread(worker_spools, base, config.spool_max_bytes)
    spools = [*orphans, mine]
    writer = BatchWriter(store, probe, mine, flush_timeout, metrics)
    metrics.gauge("storage_up", lambda: 0 if writer.storage_down else 1)
    metrics.gauge("spool_bytes", lambda: sum(spool.size for spool in spools))
    metrics.gauge("spool_segments", lambda: sum(spool.segments for spool in spools))
    drainer = asyncio.get_running_loop().create_task(
        SpoolDrainer(spools, writer, config.max_events).run()
    )
    try:
        yield writer
    finally:
        await _cancelled(drainer)
        for spool in orphans:
            spool.remove()
        mine.remove()


@asynccontextmanager
async def publishing(config: Config, metrics: Metrics) -> AsyncIterator[Callable[[], None]]:
    """This worker's metrics, written for the scrape every interval; yields a write-now."""
    if not config.metrics or config.metrics_listen == "off":
        yield lambda: None
        return
    writer = SnapshotWriter(metrics, metrics_directory(config), config.metrics_interval_s)
    task = asyncio.get_running_loop().create_task(writer.run())
    try:
        yield writer.write
    finally:
        await _cancelled(task)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
