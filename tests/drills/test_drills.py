"""Fault drills: kill -9, PostgreSQL outages, a full spool. Real processes on 127.0.0.1,
bounded in time and count, every process stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from app.embedded import EmbeddedPostgres
from tests.corpus import cloud_text, onprem_text
from tests.load_client import Results, post_many
from tests.support.cli import run_wabahook, serve_argv
from tests.support.databases import fetch
from tests.support.environment import scrubbed_environment, settings_environment
from tests.support.postgres import postmaster_pid
from tests.support.servers import ServerProcess, start_server, wait_ready
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.drill]

OUTAGE_SECONDS = 10.0  # how long PostgreSQL stays down in the outage drill
_SERVES = itertools.count()  # numbers the serve logs of a test


def start_serve(data_dir: Path, **settings: object) -> ServerProcess:
    """`wabahook serve` on `data_dir`, `settings` as its variables, in a process group of its
    own, on a socket that listened before it started."""
    env = scrubbed_environment(settings_environment({"data_dir": data_dir, **settings}))
    return start_server(serve_argv, env=env, log=data_dir / f"serve-{next(_SERVES)}.log")


@asynccontextmanager
async def serving(data_dir: Path, **settings: object) -> AsyncIterator[ServerProcess]:
    """`start_serve`, once ready; stopped by its PID on the way out (also after a kill)."""
    serve = start_serve(data_dir, **settings)
    try:
        await wait_ready(serve)
        yield serve
    finally:
        serve.stop()


def _bodies(prefix: str, count: int) -> list[bytes]:
    return [
        cloud_text(f"wamid.{prefix}-{i}") if i % 2 else onprem_text(f"ABGG-{prefix}-{i}")
        for i in range(count)
    ]


def _message_id(body: bytes) -> str:
    doc = json.loads(body)
    if "entry" in doc:
        return str(doc["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
    return str(doc["messages"][0]["id"])


async def _stored_ids(dsn: str) -> list[str]:
    return [row["message_id"] for row in await fetch(dsn, "SELECT message_id FROM wabahook_events")]


def _listed_ids(data_dir: Path, count: int) -> list[str]:
    """Event ids as `wabahook events` lists them (the operator's view)."""
    output = run_wabahook(
        "events",
        "--data-dir",
        str(data_dir),
        "--format",
        "jsonl",
        "--limit",
        str(count + 100),
        check=True,
    ).stdout
    return [json.loads(line)["id"] for line in output.splitlines()]


async def _spool_drained(data_dir: Path) -> None:
    """Wait until no spool segment is left: every spooled batch committed in PostgreSQL."""

    async def drained() -> bool:
        return not any((data_dir / "spool").rglob("*.spool"))

    await wait_until(drained, timeout=120, what="the spool to drain")


def _assert_exactly_once(acknowledged: list[bytes], stored: list[str]) -> None:
    wanted = {_message_id(body) for body in acknowledged}
    assert len(stored) == len(set(stored)), "an event was stored twice"
    missing = wanted - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"


async def _drained_exactly_once(data_dir: Path, dsn: str, acknowledged: list[bytes]) -> None:
    """Once the spool has drained, every acknowledged event is in PostgreSQL exactly once."""
    await _spool_drained(data_dir)
    _assert_exactly_once(acknowledged, await _stored_ids(dsn))


async def _load_until(
    port: int, bodies: list[bytes], acknowledged_at_least: int, connections: int = 16
) -> tuple[asyncio.Task[Results], Results]:
    """Start a load; return once `acknowledged_at_least` bodies got their 200."""
    results = Results()
    task = asyncio.create_task(
        post_many(port, "/webhook/drill", bodies, connections, results=results)
    )

    async def enough() -> bool:
        assert not task.done() or len(results.acknowledged()) >= acknowledged_at_least
        return len(results.acknowledged()) >= acknowledged_at_least

    await wait_until(enough, timeout=60, what=f"{acknowledged_at_least} acknowledgements")
    return task, results


async def test_kill_9_of_everything_under_load_loses_nothing(data_dir: Path) -> None:
    bodies = _bodies("kill", 30_000)
    async with serving(data_dir) as serve:
        load, results = await _load_until(serve.port, bodies, acknowledged_at_least=1500)
        # The server, its workers and the embedded PostgreSQL, all at once.
        postmaster = postmaster_pid(data_dir)
        serve.kill()
        os.kill(postmaster, signal.SIGKILL)
        await load
    acknowledged = [bodies[i] for i in results.acknowledged()]
    assert len(acknowledged) >= 1500

    async with serving(data_dir):
        _assert_exactly_once(acknowledged, _listed_ids(data_dir, len(bodies)))


async def _post(serve: ServerProcess, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=serve.url, timeout=30) as client:
        return await client.post("/webhook/drill", content=body)


@pytest.fixture
def postgres(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(data_dir / "db")
    (data_dir / "db").mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dsn(postgres: EmbeddedPostgres) -> str:
    """The DSN the drill's server is given (start of the running `postgres` just returns it)."""
    return postgres.start()


async def test_database_outage_is_spooled_and_drained(
    data_dir: Path, postgres: EmbeddedPostgres, dsn: str
) -> None:
    bodies = _bodies("outage", 200_000)
    async with serving(data_dir, database_url=dsn) as serve:
        load, results = await _load_until(serve.port, bodies, acknowledged_at_least=500)
        postgres.stop()
        outage_start, acknowledged_before = time.monotonic(), len(results.acknowledged())

        async def outage_over() -> bool:
            return (
                time.monotonic() - outage_start >= OUTAGE_SECONDS
                and len(results.acknowledged()) >= acknowledged_before + 1000
            )

        await wait_until(outage_over, timeout=OUTAGE_SECONDS + 30, what="the outage")
        assert any((data_dir / "spool").rglob("*.spool")), "nothing was spooled"
        postgres.start()
        acknowledged_during = len(results.acknowledged())

        async def accepting_after() -> bool:
            return len(results.acknowledged()) >= acknowledged_during + 1000

        await wait_until(accepting_after, timeout=30, what="acknowledgements after the outage")
        load.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await load
        assert results.errors == {}
        assert set(results.statuses.values()) == {200}
        assert results.latency_quantile(0.99) < 1.0
        acknowledged = [bodies[i] for i in results.acknowledged()]

        await _drained_exactly_once(data_dir, dsn, acknowledged)


async def test_server_killed_while_spooling_drains_on_restart(
    data_dir: Path, postgres: EmbeddedPostgres, dsn: str
) -> None:
    bodies = _bodies("spoolkill", 20_000)
    async with serving(data_dir, database_url=dsn) as serve:
        postgres.stop()
        load, results = await _load_until(serve.port, bodies, acknowledged_at_least=1000)
        serve.kill()
        await load
    acknowledged = [bodies[i] for i in results.acknowledged()]
    postgres.start()
    async with serving(data_dir, database_url=dsn):
        await _spool_drained(data_dir)
    _assert_exactly_once(acknowledged, await _stored_ids(dsn))


async def test_full_spool_answers_503_and_recovers(
    data_dir: Path, postgres: EmbeddedPostgres, dsn: str
) -> None:
    bodies = _bodies("full", 400)
    async with serving(data_dir, database_url=dsn, spool_max_bytes=64 * 1024) as serve:
        postgres.stop()
        results = await post_many(serve.port, "/webhook/drill", bodies[:300], connections=1)
        statuses = [results.statuses[i] for i in range(300)]
        assert statuses[0] == 200
        first_refused = statuses.index(503)
        assert set(statuses[first_refused:]) == {503}, "accepted again while the spool was full"
        assert (await _post(serve, bodies[299])).headers["retry-after"] == "10"
        postgres.start()
        start = time.monotonic()

        async def accepting() -> bool:
            return (await _post(serve, bodies[300])).status_code == 200

        await wait_until(accepting, timeout=60, what="PostgreSQL to take requests again")
        assert time.monotonic() - start < 60

        acknowledged = [bodies[i] for i in range(first_refused)] + [bodies[300]]
        await _drained_exactly_once(data_dir, dsn, acknowledged)


async def test_sigterm_under_load_answers_everything_in_flight(data_dir: Path) -> None:
    bodies = _bodies("term", 30_000)
    async with serving(data_dir) as serve:
        load, results = await _load_until(serve.port, bodies, acknowledged_at_least=1000)
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=60) == 0
        await load
        assert EmbeddedPostgres.running_dsn(data_dir) is None, "embedded PostgreSQL left running"
    # Requests after the listener closed fail to connect; none that was read gets a 5xx.
    assert set(results.statuses.values()) == {200}
    acknowledged = [bodies[i] for i in results.acknowledged()]
    async with serving(data_dir):
        _assert_exactly_once(acknowledged, _listed_ids(data_dir, len(bodies)))
