"""The resources one worker process runs with, opened and closed as one `async with`.

Start: database (embedded if no DSN), pool, migrations, group commit. Stop, in uvicorn's
order: intake stops, buffered batches flush, the pool closes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from asyncpg import Pool

from app import storage
from app.config import Config
from app.embedded import EmbeddedPostgres
from app.group_commit import GroupCommit
from app.records import IncomingRequest

logger = logging.getLogger(__name__)

SHUTDOWN_FLUSH_TIMEOUT = 10.0  # seconds buffered batches get to commit at shutdown
READY_PING_TIMEOUT = 1.0  # seconds


@dataclass(frozen=True, slots=True)
class Service:
    config: Config
    pool: Pool
    group_commit: GroupCommit

    async def ready(self) -> tuple[bool, str]:
        """Whether this worker should get traffic, and why not."""
        if self.group_commit.full:
            return False, "buffer full"
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

        async def write(batch: list[IncomingRequest]) -> None:
            await storage.write_batch(pool, batch)

        group_commit = GroupCommit(config, write)
        yield Service(config, pool, group_commit)
        left = await group_commit.close(SHUTDOWN_FLUSH_TIMEOUT)
        if left:
            logger.error("%d requests not stored at shutdown", left,
                         extra={"action": "shutdown_unflushed", "requests": left})  # fmt: skip
    finally:
        await pool.close()
