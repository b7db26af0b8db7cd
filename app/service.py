"""The resources one worker process runs with, opened and closed as one `async with`.

Start: database (embedded if no DSN), pool, migrations, spool and its drainer, group
commit. Stop, in uvicorn's order: intake stops, buffered batches become durable, the
drainer stops, the pool closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from asyncpg import Pool

from app import retention, storage
from app.config import Config
from app.embedded import EmbeddedPostgres
from app.group_commit import GroupCommit
from app.records import IncomingRequest
from app.replay import SpoolDrainer, spooled
from app.spool import Spool, worker_spools

logger = logging.getLogger(__name__)

READY_PING_TIMEOUT = 1.0  # seconds


@dataclass(frozen=True, slots=True)
class Service:
    config: Config
    pool: Pool
    group_commit: GroupCommit
    spool: Spool | None

    async def ready(self) -> tuple[bool, str]:
        """Whether this worker should get traffic, and why not."""
        if self.group_commit.full:
            return False, "buffer full"
        if self.spool is not None and self.spool.size >= self.spool.max_bytes:
            return False, "spool full"
        try:
            await storage.ping(self.pool, READY_PING_TIMEOUT)
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            return False, f"database unreachable: {exc}"
        return True, "ready"


def resolve_database_url(config: Config) -> str:
    """The configured DSN, or that of the embedded server in the data directory."""
    if config.database_url:
        return config.database_url
    # `serve` starts it before the workers; a bare `uvicorn --factory` run starts it here.
    return EmbeddedPostgres(Path(config.data_dir)).start()


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Service]:
    dsn = resolve_database_url(config)
    # One connection beyond the flushes, so readiness checks never queue behind a batch.
    pool = await storage.create_pool(dsn, min_size=config.flush_slots,
                                     max_size=config.pool_size + 1)  # fmt: skip
    try:
        async with pool.acquire() as connection:
            await storage.migrate(connection)
        maintenance = asyncio.get_running_loop().create_task(
            retention.run_periodically(pool, config.retention_days)
        )
        try:
            async with _spooling(config, pool) as (group_commit, spool):
                yield Service(config, pool, group_commit, spool)
                left = await group_commit.close(config.shutdown_timeout_s)
                if left:
                    logger.error(
                        "%d requests not stored at shutdown",
                        left,
                        extra={"action": "shutdown_unflushed", "requests": left},
                    )
        finally:
            await _cancelled(maintenance)
    finally:
        await pool.close()


@asynccontextmanager
async def _spooling(config: Config, pool: Pool) -> AsyncIterator[tuple[GroupCommit, Spool | None]]:
    """The group commit, with this worker's spool and a drainer when the spool is on."""

    async def write(batch: list[IncomingRequest]) -> None:
        await storage.write_batch(pool, batch)

    if not config.spool_max_bytes:
        yield GroupCommit(config, write), None
        return

    base = Path(config.data_dir) / "spool"
    mine, orphans = await asyncio.to_thread(worker_spools, base, config.spool_max_bytes)

    async def spool_batch(batch: list[IncomingRequest]) -> None:
        await asyncio.to_thread(mine.append, spooled(batch))
        drainer.wake()

    async def probe() -> None:
        await storage.ping(pool, READY_PING_TIMEOUT)

    group_commit = GroupCommit(config, write, fallback=spool_batch)
    drainer = SpoolDrainer([*orphans, mine], probe, group_commit)
    task = asyncio.get_running_loop().create_task(drainer.run())
    try:
        yield group_commit, mine
    finally:
        await _cancelled(task)
        for spool in orphans:
            spool.remove()
        mine.remove()


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
