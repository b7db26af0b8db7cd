"""Fault drills of the dispatcher under load: kill -9 of everything, and a PostgreSQL outage,
while events are being handed on. Real processes on 127.0.0.1, bounded, stopped by PID."""

from __future__ import annotations

import collections
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.embedded import EmbeddedPostgres
from tests.corpus import cloud_text
from tests.drills.test_drills import _load_until, serving
from tests.support.postgres import postmaster_pid
from tests.support.receiver import Receiver, receiving
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.drill]

CONTACTS = [f"49151{n:08d}" for n in range(50)]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running


def _conversation(prefix: str, count: int) -> list[bytes]:
    """`count` messages, round robin over 50 contacts; ids say whose and which."""
    return [
        cloud_text(f"wamid.{prefix}.{i}", sender=CONTACTS[i % len(CONTACTS)]) for i in range(count)
    ]


def _position(message_id: str) -> int:
    return int(message_id.rsplit(".", 1)[1])


async def _every_acknowledged_arrives_in_order(
    receiver: Receiver, prefix: str, acknowledged: list[int]
) -> None:
    """Each acknowledged event reaches the receiver, each contact's first arrivals in order."""
    wanted = {f"wamid.{prefix}.{i}" for i in acknowledged}

    async def all_arrived() -> bool:
        seen = {json.loads(r.body)["message_id"] for r in receiver.accepted}
        return wanted <= seen

    await wait_until(all_arrived, timeout=180, what="every acknowledged event downstream")
    firsts: dict[str, list[int]] = collections.defaultdict(list)
    seen: set[str] = set()
    for received in receiver.accepted:
        event = json.loads(received.body)
        if event["message_id"] not in seen:  # at least once: a repeat of one in flight
            seen.add(event["message_id"])
            firsts[event["wa_id"]].append(_position(event["message_id"]))
    for contact, positions in firsts.items():
        assert positions == sorted(positions), f"{contact}'s events out of order"


async def test_kill_9_of_everything_while_handing_on_loses_nothing(
    data_dir: Path, receiver: Receiver
) -> None:
    bodies = _conversation("kill", 20_000)
    settings = {"forward_url": receiver.url, "forward_retries": "0.1,0.5,1,2,5"}
    async with serving(data_dir, **settings) as serve:
        load, results = await _load_until(serve.port, bodies, acknowledged_at_least=1500)
        await receiver.wait_accepted(200)  # handing on is under way
        postmaster = postmaster_pid(data_dir)
        serve.kill()  # serve, its workers and its dispatcher
        os.kill(postmaster, signal.SIGKILL)
        await load
    acknowledged = results.acknowledged()
    assert len(acknowledged) >= 1500

    async with serving(data_dir, **settings):
        await _every_acknowledged_arrives_in_order(receiver, "kill", acknowledged)


async def test_a_database_outage_while_handing_on_delays_and_loses_nothing(
    data_dir: Path, receiver: Receiver
) -> None:
    postgres = EmbeddedPostgres(data_dir / "db")
    (data_dir / "db").mkdir()
    dsn = postgres.start()
    try:
        bodies = _conversation("outage", 3000)
        settings = {"forward_url": receiver.url, "database_url": dsn}
        async with serving(data_dir, **settings) as serve:
            load, results = await _load_until(serve.port, bodies, acknowledged_at_least=3000)
            await load
            await receiver.wait_accepted(100)
            postgres.stop()
            stopped_at = len(receiver.accepted)

            async def stalled() -> bool:  # nothing more is claimed while PostgreSQL is away
                log = b"".join(p.read_bytes() for p in data_dir.glob("serve-*.log"))
                return b"dispatch_lost_lead" in log or b"dispatch_unavailable" in log

            await wait_until(stalled, timeout=60, what="the dispatcher to notice the outage")
            postgres.start()
            assert len(receiver.accepted) <= stopped_at + 64  # at most what was in flight
            await _every_acknowledged_arrives_in_order(receiver, "outage", results.acknowledged())
    finally:
        postgres.stop()
