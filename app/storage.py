"""PostgreSQL: the pool, migrations, the batch write, and the queries the CLI runs.

Driver errors are translated here, at one seam: connection trouble becomes
`StorageUnavailable` (retry or spool), data PostgreSQL refuses becomes `StorageRejected`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg import Connection, Pool

from app.errors import StorageUnavailable, WabahookError
from app.records import EVENT_COLUMNS, IncomingRequest
from app.sql import migrations, queries

logger = logging.getLogger(__name__)


class StorageRejected(WabahookError):
    """PostgreSQL refused the data of a batch."""


@contextmanager
def wrap_exceptions() -> Iterator[None]:
    try:
        yield
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        asyncpg.TooManyConnectionsError,
        # A connection left mid-operation by a cancelled flush; the pool replaces it.
        asyncpg.InternalClientError,
        OSError,
        TimeoutError,
    ) as exc:
        raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise StorageRejected(f"{type(exc).__name__}: {exc}") from exc


async def _keep_session(connection: Connection) -> None:
    """Nothing to reset: pool connections carry no session state (no SET, LISTEN, advisory
    lock or cursor outlives a statement or transaction here)."""


async def create_pool(dsn: str, min_size: int, max_size: int) -> Pool:
    with wrap_exceptions():
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            # asyncpg's default reset query would cost every flush a second round trip.
            # Release still waits out a cancelled statement, rolls back a transaction left
            # open, and terminates a connection that fails either.
            reset=_keep_session,
            # A flush must fail fast when PostgreSQL is gone, not hang the batch.
            timeout=5.0,
            command_timeout=None,
            server_settings={"application_name": "wabahook"},
        )
    assert pool is not None
    return pool


async def migrate(connection: Connection) -> list[str]:
    """Apply the migrations not applied yet. Idempotent."""
    applied: list[str] = []
    # One transaction under one lock: workers starting together wait for the first to finish.
    with wrap_exceptions():
        async with connection.transaction():
            await connection.execute(queries["lock_migrations"])
            await connection.execute(queries["create_migrations_table"])
            rows = await connection.fetch(queries["select_applied_migrations"])
            done = {row["name"] for row in rows}
            for name, sql in migrations():
                if name in done:
                    continue
                await connection.execute(sql)
                await connection.execute(queries["insert_applied_migration"], name)
                applied.append(name)
                logger.info(
                    "applied migration %s",
                    name,
                    extra={"action": "migration_applied", "migration": name},
                )
    return applied


@dataclass(frozen=True, slots=True)
class Flushed:
    """What one committed batch did."""

    events: int  # events the batch brought
    stored: int  # of those, new: the rest were redeliveries dedup dropped
    conflicts: int  # dropped ones whose payload differed from the stored event's


async def write_batch(pool: Pool, batch: Sequence[IncomingRequest]) -> Flushed:
    """Store the batch with one statement in a transaction of its own: all or nothing, one
    round trip. Redeliveries are skipped by dedup (`store_batch` in queries.sql).

    Dedup conflicts the batch recorded (docs/protocol.md §7) are logged once, after the COMMIT.
    """
    started = time.perf_counter()
    requests = [request.request_row() for request in batch]
    events = [row for request in batch for row in request.event_rows()]
    # Columns, not rows: each becomes one array parameter.
    request_columns = list(zip(*requests, strict=True))
    event_columns = list(zip(*events, strict=True)) if events else [()] * len(EVENT_COLUMNS)
    with wrap_exceptions():
        async with pool.acquire() as connection:
            result = await connection.fetchrow(
                queries["store_batch"], *request_columns, *event_columns
            )
    conflicts: int = result["conflicts"]
    if conflicts:
        logger.warning(
            "dedup recorded %d conflicting events: same key as a stored event, other payload",
            conflicts,
            extra={"action": "dedup_conflicts", "conflicts": conflicts},
        )
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "batch flushed",
            extra={
                "action": "batch_flushed",
                "requests": len(batch),
                "rows": len(events),
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
    return Flushed(len(events), result["stored"], conflicts)


async def ping(pool: Pool, timeout: float) -> None:
    with wrap_exceptions():
        async with pool.acquire(timeout=timeout) as connection:
            await connection.fetchval(queries["ping"], timeout=timeout)


@asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[Connection]:
    """One plain connection, for the CLI."""
    with wrap_exceptions():
        connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def select_events(
    connection: Connection,
    channel: str | None,
    kind: str | None,
    since: datetime | None,
    limit: int,
    contact: str | None = None,
    conflicts: bool = False,
) -> list[dict[str, Any]]:
    """Stored events, oldest first, or with `conflicts` the recorded dedup conflicts; `contact`
    keeps those whose wa_id, user id or group id it is."""
    query = queries["select_event_conflicts"] if conflicts else queries["select_events"]
    with wrap_exceptions():
        rows = await connection.fetch(query, channel, kind, since, limit, contact)
    return [dict(row) for row in rows]


async def select_requests(
    connection: Connection, outcome: str | None, channel: str | None, limit: int
) -> list[dict[str, Any]]:
    with wrap_exceptions():
        rows = await connection.fetch(queries["select_requests"], outcome, channel, limit)
    return [dict(row) for row in rows]


async def select_request_body(connection: Connection, request_id: uuid.UUID) -> bytes | None:
    with wrap_exceptions():
        body: bytes | None = await connection.fetchval(queries["select_request_body"], request_id)
    return body
