"""The batch writer against a real PostgreSQL: quarantine isolation, the spool while
PostgreSQL does not answer, the drain back into it, and retries without a spool."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from app import storage
from app.batch_writer import BatchWriter
from app.errors import StorageUnavailable
from app.metrics import Metrics
from app.records import IncomingRequest, incoming
from app.replay import SpoolDrainer
from app.spool import Spool
from tests.corpus import cloud_text
from tests.support.waiting import wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await storage.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


def _writer(pool: asyncpg.Pool, spool: Spool | None, flush_timeout_s: float = 1.0) -> BatchWriter:
    return BatchWriter(
        functools.partial(storage.write_batch, pool),
        functools.partial(storage.ping, pool, 1.0),
        spool,
        flush_timeout_s,
        Metrics(),
    )


def _requests(*message_ids: str) -> list[IncomingRequest]:
    now = datetime.now(UTC)
    return [incoming(cloud_text(m), "c", received_at=now) for m in message_ids]


async def _stored(db: asyncpg.Connection) -> dict[uuid.UUID, tuple[str, int]]:
    """request id -> (outcome, events stored for it)."""
    rows = await db.fetch(
        "SELECT r.id, r.outcome, count(e.*) AS events FROM wabahook_requests r"
        " LEFT JOIN wabahook_events e ON e.request_id = r.id GROUP BY r.id, r.outcome"
    )
    return {row["id"]: (row["outcome"], row["events"]) for row in rows}


async def test_a_body_postgresql_refuses_is_quarantined_and_the_rest_commit(
    pool: asyncpg.Pool, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # A real refusal from PostgreSQL, for one message id only.
    await db.execute(
        "ALTER TABLE wabahook_events ADD CONSTRAINT poison CHECK (message_id <> 'wamid.poison')"
    )
    batch = _requests("wamid.w1", "wamid.poison", "wamid.w2")
    with caplog.at_level(logging.ERROR):
        await _writer(pool, None).write(batch, asyncio.get_running_loop().time() + 5)
    assert await _stored(db) == {
        batch[0].id: ("stored", 1),
        batch[1].id: ("quarantined", 0),
        batch[2].id: ("stored", 1),
    }
    [record] = [r for r in caplog.records if getattr(r, "action", None) == "body_quarantined"]
    assert record.request_id == str(batch[1].id)  # type: ignore[attr-defined]


async def test_without_a_spool_a_lost_database_is_retried_until_the_deadline(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    writer = _writer(pool, None)
    await pool.close()
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + 0.3
    with caplog.at_level(logging.WARNING), pytest.raises(StorageUnavailable):
        await writer.write(_requests("wamid.w3"), give_up_at)
    assert loop.time() < give_up_at + 1.0  # gave up around the deadline, not long after
    retries = [r for r in caplog.records if getattr(r, "action", None) == "flush_retry"]
    assert len(retries) >= 2


async def test_a_batch_postgresql_does_not_take_in_time_is_spooled_then_drained(
    pool: asyncpg.Pool, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    spool.open()
    writer = _writer(pool, spool, flush_timeout_s=0.2)
    writer.spool_pending.clear()  # the spool starts empty: nothing to replay yet
    first, second = _requests("wamid.s1"), _requests("wamid.s2", "wamid.s3")
    locker = await asyncpg.connect(database_url)
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE wabahook_events IN ACCESS EXCLUSIVE MODE")
        deadline = asyncio.get_running_loop().time() + 5
        await writer.write(first, deadline)  # waits out the flush timeout, then spools
        assert writer.storage_down and writer.spool_pending.is_set()
        await writer.write(second, deadline)  # straight to the spool while PostgreSQL is down
        assert spool.size > 0
        assert [r.id for b in spool.pending() for r in b.requests] == [r.id for r in first + second]
        await transaction.rollback()
    finally:
        await locker.close()

    drainer = asyncio.get_running_loop().create_task(
        SpoolDrainer([spool], writer, max_events=1000).run()
    )
    try:

        async def drained() -> bool:
            return not writer.storage_down and not spool.size

        await wait_until(drained, what="the spool to drain into PostgreSQL")
    finally:
        drainer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drainer
    ids = await db.fetch("SELECT id FROM wabahook_requests ORDER BY id")
    assert sorted(row["id"] for row in ids) == sorted(r.id for r in first + second)
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 3
    spool.close()
