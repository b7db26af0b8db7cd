"""Retention drops whole daily partitions; dedup holds across partitions for the redelivery
window."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from app import retention, storage
from app.records import incoming
from tests.corpus import cloud_text

pytestmark = pytest.mark.anyio

TODAY = datetime.now(UTC).date()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await storage.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


async def _deliver(pool: asyncpg.Pool, message_id: str, day: date) -> None:
    await storage.write_batch(pool, [incoming(cloud_text(message_id), "c", received_at=_at(day))])


async def _partitions(db: asyncpg.Connection) -> set[str]:
    rows = await db.fetch(
        "SELECT inhrelid::regclass::text AS name FROM pg_inherits"
        " WHERE inhparent = 'wabahook_events'::regclass"
    )
    return {row["name"] for row in rows}


async def test_redelivery_days_later_stores_no_second_event(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    await db.execute("SELECT wabahook_create_partitions_v2($1, $2)", TODAY - timedelta(10), TODAY)
    await _deliver(pool, "wamid.week", TODAY - timedelta(days=7))
    await _deliver(pool, "wamid.week", TODAY)
    rows = await db.fetch("SELECT received_on FROM wabahook_events")
    assert [row["received_on"] for row in rows] == [TODAY - timedelta(days=7)]
    assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == 2


async def test_dedup_window_is_eight_days(pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    await db.execute("SELECT wabahook_create_partitions_v2($1, $2)", TODAY - timedelta(10), TODAY)
    await _deliver(pool, "wamid.inside", TODAY - timedelta(days=8))
    await _deliver(pool, "wamid.outside", TODAY - timedelta(days=9))
    await _deliver(pool, "wamid.inside", TODAY)
    await _deliver(pool, "wamid.outside", TODAY)
    counts = await db.fetch(
        "SELECT message_id, count(*) AS n FROM wabahook_events GROUP BY 1 ORDER BY 1"
    )
    assert [(row["message_id"], row["n"]) for row in counts] == [
        ("wamid.inside", 1),
        ("wamid.outside", 2),
    ]


async def test_expired_partitions_are_dropped_whole(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    await db.execute("SELECT wabahook_create_partitions_v2($1, $2)", TODAY - timedelta(40), TODAY)
    await _deliver(pool, "wamid.old", TODAY - timedelta(days=31))
    await _deliver(pool, "wamid.kept", TODAY - timedelta(days=30))
    await _deliver(pool, "wamid.ancient", TODAY - timedelta(days=400))  # the default partition
    assert await db.fetchval("SELECT count(*) FROM wabahook_events_default") == 1

    dropped = (await retention.maintain(pool, retention_days=30, today=TODAY)).dropped

    partitions = await _partitions(db)
    expected_days = [TODAY + timedelta(days) for days in range(-30, retention.DAYS_AHEAD + 1)]
    assert partitions == {
        "wabahook_events_default",
        *(f"wabahook_events_{day:%Y%m%d}" for day in expected_days),
    }
    assert dropped == 3 * 10  # days -40 .. -31: requests, events and deliveries
    rows = await db.fetch("SELECT message_id FROM wabahook_events")
    assert [row["message_id"] for row in rows] == ["wamid.kept"]
    assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == 1


async def test_partitions_are_made_ahead_once(pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    later = TODAY + timedelta(days=10)
    created = (await retention.maintain(pool, retention_days=30, today=later)).created
    assert created == 3 * (retention.DAYS_AHEAD + 1)  # requests, events, deliveries
    assert f"wabahook_events_{later + timedelta(retention.DAYS_AHEAD):%Y%m%d}" in await _partitions(
        db
    )
    assert await retention.maintain(pool, retention_days=30, today=later) == retention.Maintained(
        0, 0, 0
    )


async def test_events_never_handed_on_are_counted_when_their_day_expires(
    pool: asyncpg.Pool, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    await db.execute("SELECT wabahook_create_partitions_v2($1, $2)", TODAY - timedelta(40), TODAY)
    for message_id in ("wamid.delivered", "wamid.retrying", "wamid.unread"):
        await _deliver(pool, message_id, TODAY - timedelta(days=31))
    await _deliver(pool, "wamid.kept", TODAY)
    first = await retention.maintain(pool, retention_days=30, today=TODAY)
    # Without a dispatcher, nothing was promised to anyone: no undelivered count.
    assert first.dropped and first.undelivered == 0
    for message_id in ("wamid.delivered", "wamid.retrying", "wamid.unread"):
        await _deliver(pool, message_id + ".2", TODAY - timedelta(days=32))
    # A dispatcher read the first two (one delivered, one retrying) and not the third.
    events = await db.fetch(
        "SELECT id, received_on, channel, xid FROM wabahook_events"
        " WHERE message_id LIKE '%.2' ORDER BY xid, id"
    )
    await db.execute(
        "INSERT INTO wabahook_dispatch_cursor (xid, event_id, leader, heartbeat_at)"
        " VALUES ($1, $2, 'test', now())",
        events[1]["xid"],
        events[1]["id"],
    )
    for event, state in zip(events[:2], ("delivered", "retrying"), strict=False):
        await db.execute(
            "INSERT INTO wabahook_deliveries (received_on, event_id, channel, state)"
            " VALUES ($1, $2, $3, $4)",
            event["received_on"],
            event["id"],
            event["channel"],
            state,
        )

    with caplog.at_level("ERROR", logger="app.retention"):
        maintained = await retention.maintain(pool, retention_days=30, today=TODAY)

    assert maintained.undelivered == 2  # the retrying one and the unread one
    (record,) = [r for r in caplog.records if getattr(r, "action", "") == "retention_undelivered"]
    assert record.events == 2  # type: ignore[attr-defined]
    assert await db.fetchval("SELECT count(*) FROM wabahook_deliveries") == 0


async def test_dedup_keys_past_the_window_are_pruned(
    pool: asyncpg.Pool, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "PRUNE_SLICE", 2)  # several slices
    await db.execute("SELECT wabahook_create_partitions_v2($1, $2)", TODAY - timedelta(12), TODAY)
    for n in range(5):
        await _deliver(pool, f"wamid.stale-{n}", TODAY - timedelta(days=9))
    await _deliver(pool, "wamid.recent", TODAY - timedelta(days=8))

    await retention.maintain(pool, retention_days=30, today=TODAY)

    rows = await db.fetch("SELECT received_on FROM wabahook_event_keys")
    assert [row["received_on"] for row in rows] == [TODAY - timedelta(days=8)]
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 6  # events stay
