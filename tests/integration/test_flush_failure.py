"""The batch boundary: no request is answered 200 for a batch that did not commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from tests.corpus import cloud_text
from tests.support.waiting import wait_until

pytestmark = pytest.mark.anyio

_WAITING_FLUSH = """
SELECT pid FROM pg_stat_activity
WHERE application_name = 'wabahook' AND datname = current_database()
  AND wait_event_type = 'Lock' AND query LIKE 'WITH requests AS (%INSERT INTO wabahook_requests%'
"""


async def test_killed_flush_is_retried_and_answered_only_after_commit(
    server_factory: Callable[..., str], database_url: str, db: asyncpg.Connection
) -> None:
    base = server_factory(database_url, ack_deadline_ms=30_000, spool_max_bytes=0)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        assert (await client.get("/readyz")).status_code == 200  # started
    locker = await asyncpg.connect(database_url)
    blocked: list[int] = []

    async def flush_blocked() -> bool:
        blocked[:] = [row["pid"] for row in await db.fetch(_WAITING_FLUSH)]
        return bool(blocked)

    try:
        # Hold the events table: the batch's dedup insert waits on this lock.
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE wabahook_events IN ACCESS EXCLUSIVE MODE")
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            post = asyncio.create_task(client.post("/webhook/c", content=cloud_text("wamid.k1")))
            await wait_until(flush_blocked, what="the flush to wait on the lock")
            first = blocked[0]
            # Kill the flushing connection mid-batch: the batch fails and must be retried.
            await db.execute("SELECT pg_terminate_backend($1)", first)

            async def retried() -> bool:
                return await flush_blocked() and blocked[0] != first

            await wait_until(retried, what="the retried flush to wait on the lock")
            assert not post.done(), "answered before the batch committed"
            assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == 0
            await transaction.rollback()
            response = await post
    finally:
        await locker.close()
    assert response.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == 1
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 1


async def test_flush_that_never_commits_is_answered_503(
    server_factory: Callable[..., str], database_url: str, db: asyncpg.Connection
) -> None:
    base = server_factory(database_url, ack_deadline_ms=500, spool_max_bytes=0)
    locker = await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE wabahook_events IN ACCESS EXCLUSIVE MODE")
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                response = await client.post("/webhook/c", content=cloud_text("wamid.k2"))
            assert response.status_code == 503
            assert int(response.headers["retry-after"]) > 0
    finally:
        await locker.close()
