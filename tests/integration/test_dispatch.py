"""The dispatcher end to end: real uvicorn ingesting, real dispatcher processes, real HTTP to a
local receiver, real PostgreSQL."""

from __future__ import annotations

import base64
import collections
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import standardwebhooks

from app.config import Config
from tests.corpus import DE, ES, MX, cloud_text
from tests.support.dispatchers import running_dispatcher
from tests.support.receiver import Answer, Receiver, receiving
from tests.support.servers import running_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
FAST_RETRIES = (0.05, 0.05, 0.1, 0.1, 0.2)  # s: retries in tests come quickly
CONTACTS = (DE, ES, MX)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as started:
        yield started


def settings(database_url: str, tmp_path: Path, receiver: Receiver, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": str(tmp_path),
        "metrics_listen": "main",
        "forward_url": receiver.url,
        "forward_secret": SECRET,
        "forward_retries": FAST_RETRIES,
        "forward_timeout_s": 2.0,
    }
    values.update(overrides)
    return Config(**values)


async def post(url: str, bodies: list[bytes], channel: str = "main") -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for body in bodies:
            response = await client.post(f"/webhook/{channel}", content=body)
            assert response.status_code == 200, response.text


def conversation(rounds: int, contacts: tuple[str, ...] = CONTACTS) -> list[bytes]:
    """`rounds` messages from each contact, interleaved; message ids say who and which."""
    return [
        cloud_text(f"wamid.{contact}.{n}", sender=contact)
        for n in range(rounds)
        for contact in contacts
    ]


def by_contact(received: list[dict[str, Any]]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = collections.defaultdict(list)
    for event in received:
        order[event["wa_id"]].append(event["message_id"])
    return dict(order)


def first_arrivals(received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event once, at its first accepted arrival (at least once may repeat one)."""
    seen: set[int] = set()
    firsts = []
    for event in received:
        if event["id"] not in seen:
            seen.add(event["id"])
            firsts.append(event)
    return firsts


def expected_order(rounds: int, contacts: tuple[str, ...] = CONTACTS) -> dict[str, list[str]]:
    return {c: [f"wamid.{c}.{n}" for n in range(rounds)] for c in contacts}


async def test_every_event_is_handed_on_once_signed_and_in_order(
    database_url: str, tmp_path: Path, receiver: Receiver, db: asyncpg.Connection
) -> None:
    config = settings(database_url, tmp_path, receiver)
    with running_server(config) as url, running_dispatcher(config, tmp_path / "dispatch.log"):
        await post(url, conversation(5))
        accepted = await receiver.wait_accepted(15)

    events = [r.json() for r in accepted]
    assert len(events) == 15 and len({e["id"] for e in events}) == 15
    assert by_contact(events) == expected_order(5)
    stored = {
        row["id"]: row
        for row in await db.fetch("SELECT id, payload::text AS payload, * FROM wabahook_events")
    }
    verifier = standardwebhooks.Webhook(SECRET)
    for received, event in zip(accepted, events, strict=True):
        verifier.verify(received.body, received.headers)  # raises unless the signature holds
        row = stored[event["id"]]
        assert event["payload"] == json.loads(row["payload"])
        assert (event["channel"], event["kind"], event["type"]) == ("main", "message", "text")
        assert event["message_id"] == row["message_id"] and event["wa_id"] == row["wa_id"]
        assert event["phone_number_id"] == row["phone_number_id"]
        assert set(event) >= {"received_at", "event_ts", "request_id"}
    states = await db.fetch("SELECT state, attempts FROM wabahook_deliveries")
    assert [tuple(s) for s in states] == [("delivered", 1)] * 15
