"""Dedup tells an exact redelivery from a conflicting one (docs/protocol.md §7), and the
`too_many_events` outcome is stored: `storage.write_batch` on a real PostgreSQL, the CLI as a
real process."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app import retention, storage
from app.records import IncomingRequest, incoming
from tests.corpus import CASES, CLOUD_STATUS, cloud_text
from tests.support.cli import run_wabahook

pytestmark = pytest.mark.anyio

TODAY = datetime.now(UTC).date()
CHANNEL = "acme-de"
MESSAGE_ID = "wamid.HBgNNDkxNTE5ODc2NTQzMhUCABIYFDNFQjBDMUEyRkZFRTAwMTEyMjMzAA=="


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await storage.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


def _edited(body: bytes, edit: Any) -> bytes:
    """`body` with `edit(value)` applied to its first Cloud change value, re-serialised."""
    document = json.loads(body)
    edit(document["entry"][0]["changes"][0]["value"])
    return json.dumps(document, separators=(",", ":")).encode()


def _forged(message_id: str, text: str) -> bytes:
    """The real message's id and business number, with other text."""

    def edit(value: dict[str, Any]) -> None:
        value["messages"][0]["text"]["body"] = text

    return _edited(cloud_text(message_id), edit)


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


async def _write(pool: asyncpg.Pool, *requests: IncomingRequest) -> None:
    await storage.write_batch(pool, list(requests))


async def _conflicts(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await db.fetch("SELECT * FROM wabahook_event_conflicts ORDER BY id"))


def _logged_conflicts(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [
        record.conflicts  # type: ignore[attr-defined]
        for record in caplog.records
        if getattr(record, "action", None) == "dedup_conflicts"
    ]


def _jsonl(*args: str) -> list[dict[str, Any]]:
    result = run_wabahook(*args, "--format", "jsonl")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return [json.loads(line) for line in result.stdout.splitlines()]


# --- what is a conflict -------------------------------------------------------------------


async def test_an_exact_redelivery_records_no_conflict(
    pool: asyncpg.Pool, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    body = cloud_text(MESSAGE_ID)
    # The same event in another envelope (another contact name): other bytes, same payload.
    rewrapped = _edited(body, lambda value: value["contacts"][0]["profile"].update(name="C. F."))
    assert rewrapped != body
    caplog.set_level(logging.WARNING, logger="app.storage")

    await _write(pool, incoming(body, CHANNEL))
    await _write(pool, incoming(body, CHANNEL))
    await _write(pool, incoming(rewrapped, "other-channel"))

    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 1
    assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == 3
    assert await _conflicts(db) == []
    assert _logged_conflicts(caplog) == []


async def test_a_forged_message_then_the_real_one_records_one_conflict(
    pool: asyncpg.Pool, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    forged = incoming(_forged(MESSAGE_ID, "Bitte zahlen Sie an DE00 1234"), CHANNEL)
    real = incoming(cloud_text(MESSAGE_ID), CHANNEL)
    caplog.set_level(logging.WARNING, logger="app.storage")

    await _write(pool, forged)
    await _write(pool, real)

    [event] = await db.fetch("SELECT id, request_id, received_at, payload FROM wabahook_events")
    assert event["request_id"] == forged.id  # the first stays the stored event
    [conflict] = await _conflicts(db)
    assert conflict["payload"] == real.events[0].payload  # the text as received
    assert conflict["kept_payload"] == forged.events[0].payload
    assert conflict["kept_request_id"] == forged.id
    assert conflict["kept_event_id"] == event["id"]
    assert conflict["kept_received_at"] == event["received_at"]
    assert (conflict["request_id"], conflict["seq"], conflict["received_at"]) == (
        real.id,
        0,
        real.received_at,
    )
    assert conflict["dedup_key"] == real.event_rows()[0][0]
    assert (conflict["channel"], conflict["kind"], conflict["type"]) == (CHANNEL, "message", "text")
    assert conflict["message_id"] == MESSAGE_ID
    assert conflict["phone_number_id"] == real.events[0].phone_number_id
    assert conflict["wa_id"] == real.events[0].wa_id
    assert _logged_conflicts(caplog) == [1]
    # The real body itself is kept, as every acknowledged body is.
    assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == 2


async def test_a_status_with_the_same_key_and_another_payload_is_a_conflict(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    def later(value: dict[str, Any]) -> None:
        value["statuses"][0]["timestamp"] = "1780000999"

    first = incoming(CLOUD_STATUS, CHANNEL)
    second = incoming(_edited(CLOUD_STATUS, later), CHANNEL)

    await _write(pool, first)
    await _write(pool, incoming(CLOUD_STATUS, CHANNEL))  # exact: nothing
    await _write(pool, second)

    [conflict] = await _conflicts(db)
    assert (conflict["kind"], conflict["type"]) == ("status", "read")
    assert conflict["request_id"] == second.id
    assert conflict["kept_request_id"] == first.id
    assert json.loads(conflict["payload"])["timestamp"] == "1780000999"
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 1


async def test_one_warning_per_flush_counts_its_conflicts(
    pool: asyncpg.Pool, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [f"wamid.flush{n}" for n in range(3)]
    await _write(pool, *(incoming(_forged(i, "gefälscht"), CHANNEL) for i in ids))
    caplog.set_level(logging.WARNING, logger="app.storage")

    # Two conflicting copies, one exact redelivery and one new event, in one flush.
    await _write(
        pool,
        incoming(cloud_text(ids[0]), CHANNEL),
        incoming(cloud_text(ids[1]), CHANNEL),
        incoming(_forged(ids[2], "gefälscht"), CHANNEL),
        incoming(cloud_text("wamid.new"), CHANNEL),
    )

    assert _logged_conflicts(caplog) == [2]
    assert [row["message_id"] for row in await _conflicts(db)] == ids[:2]
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 4


async def test_two_copies_in_one_batch_are_not_compared(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    # The documented limit: the statement's snapshot does not see what the batch inserted.
    await _write(
        pool,
        incoming(_forged(MESSAGE_ID, "gefälscht"), CHANNEL),
        incoming(cloud_text(MESSAGE_ID), CHANNEL),
    )

    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 1
    assert await _conflicts(db) == []


# --- listing ------------------------------------------------------------------------------


async def test_events_conflicts_lists_both_payloads(
    pool: asyncpg.Pool, db: asyncpg.Connection, database_url: str
) -> None:
    forged = incoming(_forged(MESSAGE_ID, "gefälscht"), CHANNEL)
    real = incoming(cloud_text(MESSAGE_ID), CHANNEL)
    status = incoming(CLOUD_STATUS, "acme-es")
    await _write(pool, forged, status)
    await _write(pool, real)
    await _write(pool, incoming(cloud_text("wamid.other"), CHANNEL))
    [event_id] = [row["id"] for row in await db.fetch("SELECT id FROM wabahook_events LIMIT 1")]

    [listed] = _jsonl("events", "--database-url", database_url, "--conflicts")

    assert listed["payload"] == json.loads(real.events[0].payload)
    assert listed["kept_payload"] == json.loads(forged.events[0].payload)
    assert listed["payload"]["text"] != listed["kept_payload"]["text"]
    assert {key: listed[key] for key in ("channel", "kind", "type", "id", "seq")} == {
        "channel": CHANNEL,
        "kind": "message",
        "type": "text",
        "id": MESSAGE_ID,
        "seq": 0,
    }
    assert listed["request_id"] == str(real.id)
    assert listed["kept_request_id"] == str(forged.id)
    assert listed["kept_event_id"] == event_id
    assert datetime.fromisoformat(listed["received_at"]) == real.received_at
    assert datetime.fromisoformat(listed["kept_received_at"]) == forged.received_at
    # The filters of `events` apply.
    base = ("events", "--database-url", database_url, "--conflicts")
    assert _jsonl(*base, "--channel", "acme-es") == []
    assert _jsonl(*base, "--kind", "status") == []
    assert len(_jsonl(*base, "--since", "1h")) == 1
    assert _jsonl(*base, "--since", (datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    # Without --conflicts, the stored events as before.
    assert len(_jsonl("events", "--database-url", database_url)) == 3


async def test_events_conflicts_table(pool: asyncpg.Pool, database_url: str) -> None:
    forged = incoming(_forged(MESSAGE_ID, "gefälscht"), CHANNEL)
    real = incoming(cloud_text(MESSAGE_ID), CHANNEL)
    await _write(pool, forged)
    await _write(pool, real)

    result = run_wabahook("events", "--database-url", database_url, "--conflicts")

    assert result.returncode == 0, result.stderr.decode(errors="replace")
    header, *rows = result.stdout.decode().splitlines()
    assert header.split() == [
        "received_at",
        "channel",
        "kind",
        "type",
        "id",
        "request_id",
        "kept_request_id",
    ]
    [row] = [line.split() for line in rows]
    assert row[1:] == [CHANNEL, "message", "text", MESSAGE_ID, str(real.id), str(forged.id)]


# --- retention ----------------------------------------------------------------------------


async def test_retention_deletes_expired_conflicts(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    # The stored events arrive today; the conflicting copies are replayed with the times they
    # arrived at (a spool drained late), so their conflicts are as old as that.
    ages = {"wamid.expired": 31, "wamid.kept": 30, "wamid.fresh": 0}
    await _write(pool, *(incoming(_forged(i, "gefälscht"), CHANNEL) for i in ages))
    for message_id, age in ages.items():
        arrived = _at(TODAY - timedelta(days=age))
        await _write(pool, incoming(cloud_text(message_id), CHANNEL, received_at=arrived))
    assert len(await _conflicts(db)) == 3

    await retention.maintain(pool, retention_days=30, today=TODAY)

    assert [row["message_id"] for row in await _conflicts(db)] == ["wamid.kept", "wamid.fresh"]
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 3


# --- the too_many_events outcome ----------------------------------------------------------


async def test_too_many_events_is_stored_and_listed(
    pool: asyncpg.Pool, db: asyncpg.Connection, database_url: str
) -> None:
    body = next(case.body for case in CASES if case.outcome == "stored" and len(case.events) > 2)
    request = incoming(body, CHANNEL, max_events=2)
    assert (request.outcome, request.events) == ("too_many_events", [])

    await _write(pool, request, incoming(cloud_text(MESSAGE_ID), CHANNEL))

    [listed] = _jsonl("requests", "--database-url", database_url, "--outcome", "too_many_events")
    assert (listed["id"], listed["outcome"], listed["events"]) == (
        str(request.id),
        "too_many_events",
        0,
    )
    assert listed["bytes"] == len(body)
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 1
