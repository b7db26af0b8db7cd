"""The dispatcher end to end: real uvicorn ingesting, real dispatcher processes, real HTTP to a
local receiver, real PostgreSQL."""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import standardwebhooks
from prometheus_client.parser import text_string_to_metric_families

from app.config import EXPORT_VARIABLE, Config
from tests.corpus import CLOUD_STATUS, DE, ES, MX, cloud_text
from tests.support.cli import run_wabahook, serve_argv, wabahook_command
from tests.support.dispatchers import REPO, running_dispatcher, start_dispatcher
from tests.support.environment import scrubbed_environment, settings_environment
from tests.support.processes import is_running, kill_group, start_group, stop_group
from tests.support.receiver import Answer, Receiver, receiving
from tests.support.servers import running_server, start_server, wait_ready
from tests.support.waiting import wait_until

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
APP_SECRET = "meta-app-secret"
FAST_RETRIES = (0.05, 0.05, 0.1, 0.1, 0.2)  # s: retries in tests come quickly
CONTACTS = (DE, ES, MX)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running


def settings(database_url: str, tmp_path: Path, receiver: Receiver, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": str(tmp_path),
        "metrics_listen": "main",
        "forward_url": receiver.url,
        "forward_secret": SECRET,
        "forward_retries": FAST_RETRIES,
        "forward_timeout_s": 2.0,
        "metrics_interval_s": 0.1,
    }
    values.update(overrides)
    return Config(**values)


async def post(url: str, bodies: list[bytes], channel: str = "main") -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for body in bodies:
            response = await client.post(f"/webhook/{channel}", content=body)
            assert response.status_code == 200, response.text


def conversation(rounds: int, contacts: tuple[str, ...] = CONTACTS, tag: str = "") -> list[bytes]:
    """`rounds` messages from each contact, interleaved; message ids say who and which."""
    return [
        cloud_text(f"wamid.{tag}{contact}.{n}", sender=contact)
        for n in range(rounds)
        for contact in contacts
    ]


def expected_order(
    rounds: int, contacts: tuple[str, ...] = CONTACTS, tag: str = ""
) -> dict[str, list[str]]:
    return {c: [f"wamid.{tag}{c}.{n}" for n in range(rounds)] for c in contacts}


def events_of(received: list[Any]) -> list[dict[str, Any]]:
    return [r.json() for r in received]


def by_contact(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = collections.defaultdict(list)
    for event in events:
        order[event["wa_id"]].append(event["message_id"])
    return dict(order)


def first_arrivals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event once, at its first accepted arrival (at least once may repeat one)."""
    seen: set[int] = set()
    firsts = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            firsts.append(event)
    return firsts


def cli_env(database_url: str) -> dict[str, str]:
    return scrubbed_environment({"DATABASE_URL": database_url})


async def dispatch_metrics(url: str) -> dict[str, float]:
    """The unlabelled wabahook_dispatch_* samples the server's /metrics shows, by name."""
    async with httpx.AsyncClient(base_url=url) as client:
        text = (await client.get("/metrics")).text
    return {
        sample.name.removeprefix("wabahook_dispatch_"): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("wabahook_dispatch_") and not sample.labels
    }


async def states(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT state, count(*) FROM wabahook_deliveries GROUP BY 1")
    return {row["state"]: row["count"] for row in rows}


async def test_every_event_is_handed_on_once_signed_and_in_order(
    database_url: str, tmp_path: Path, receiver: Receiver, db: asyncpg.Connection
) -> None:
    config = settings(database_url, tmp_path, receiver)
    with running_server(config) as url, running_dispatcher(config):
        await post(url, conversation(5))
        accepted = await receiver.wait_accepted(15)

    events = events_of(accepted)
    assert len(events) == 15 and len({e["id"] for e in events}) == 15
    assert by_contact(events) == expected_order(5)
    stored = {
        row["id"]: row
        for row in await db.fetch("SELECT *, payload::text AS payload FROM wabahook_events")
    }
    verifier = standardwebhooks.Webhook(SECRET)
    for received, event in zip(accepted, events, strict=True):
        verifier.verify(received.body, received.headers)  # raises unless the signature holds
        row = stored[event["id"]]
        assert event["payload"] == json.loads(row["payload"])
        assert (event["channel"], event["kind"], event["type"]) == ("main", "message", "text")
        assert event["message_id"] == row["message_id"] and event["wa_id"] == row["wa_id"]
        assert event["phone_number_id"] == row["phone_number_id"]
        assert event["request_id"] == str(row["request_id"])
        assert event["received_at"] and event["event_ts"]
    assert await states(db) == {"delivered": 15}


async def test_failures_timeouts_and_retry_after_then_recovery(
    database_url: str, tmp_path: Path, receiver: Receiver, db: asyncpg.Connection
) -> None:
    """A receiver that fails, hangs, asks to wait: every event arrives, each contact's in order."""
    rng = random.Random(7)
    attempts: collections.Counter[str] = collections.Counter()

    def flaky(headers: dict[str, str], body: bytes) -> Answer:
        message_id = json.loads(body)["message_id"]
        attempts[message_id] += 1
        if attempts[message_id] > 3:  # recovers
            return Answer(200)
        return rng.choice(
            [
                Answer(200),
                Answer(500),
                Answer(hang=True),
                Answer(429, {"Retry-After": "0"}),
                Answer(503, {"Retry-After": "0"}),
            ]
        )

    receiver.answer = flaky
    config = settings(database_url, tmp_path, receiver, forward_timeout_s=0.3)
    with running_server(config) as url, running_dispatcher(config):
        await post(url, conversation(8))
        await receiver.wait_accepted(24)

    events = events_of(receiver.accepted)
    assert len(events) == 24  # none delivered twice: each was answered once with a 2xx
    assert by_contact(events) == expected_order(8)
    assert {r.status for r in receiver.received} >= {0, 200, 500, 429, 503}
    assert await states(db) == {"delivered": 24}


async def test_retry_after_is_honoured(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    answers = iter([Answer(429, {"Retry-After": "1"}), Answer(200)])
    receiver.answer = lambda headers, body: next(answers)
    config = settings(database_url, tmp_path, receiver)
    with running_server(config) as url, running_dispatcher(config):
        await post(url, [cloud_text("wamid.wait")])
        await receiver.wait_accepted(1)

    first, second = receiver.received
    assert first.status == 429 and second.status == 200
    # The schedule alone would have retried after about 0.05 s.
    assert second.at - first.at >= 0.9
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


async def test_a_failing_contact_holds_up_only_itself(
    database_url: str, tmp_path: Path, receiver: Receiver, db: asyncpg.Connection
) -> None:
    receiver.answer = lambda headers, body: Answer(500 if json.loads(body)["wa_id"] == DE else 200)
    config = settings(database_url, tmp_path, receiver, forward_retries=(0.05, 0.05, 3600.0))
    with running_server(config) as url, running_dispatcher(config):
        await post(url, conversation(10))
        accepted = await receiver.wait_accepted(20)

        async def de_waits_for_its_retry() -> bool:
            head = await db.fetchrow(
                "SELECT attempts FROM wabahook_deliveries"
                " WHERE contact = $1 AND state = 'retrying'",
                DE,
            )
            return head is not None and head["attempts"] == 3

        await wait_until(de_waits_for_its_retry, what="DE's first event to fail three times")

        async def lagging() -> bool:
            return (await dispatch_metrics(url))["lag_seconds"] > 0

        await wait_until(lagging, what="the lag to show DE's waiting events")

    assert by_contact(events_of(accepted)) == expected_order(10, (ES, MX))
    tried = {r.json()["message_id"] for r in receiver.received if r.json()["wa_id"] == DE}
    assert tried == {f"wamid.{DE}.0"}  # DE's later events wait behind its first
    rows = await db.fetch(
        "SELECT state, next_attempt_at IS NOT NULL AS due FROM wabahook_deliveries"
        " WHERE contact = $1 ORDER BY id",
        DE,
    )
    assert [tuple(r) for r in rows] == [("retrying", True)] + [("pending", False)] * 9


async def test_dead_letter_after_the_last_attempt_then_redeliver(
    database_url: str, tmp_path: Path, receiver: Receiver, db: asyncpg.Connection
) -> None:
    broken = {f"wamid.{DE}.1"}
    receiver.answer = lambda headers, body: Answer(
        500 if json.loads(body)["message_id"] in broken else 200
    )
    config = settings(database_url, tmp_path, receiver)
    with running_server(config) as url, running_dispatcher(config):
        await post(url, conversation(3, (DE,)))
        await receiver.wait_accepted(2)

        listed = run_wabahook(
            "deliveries", "--state", "dead", "--format", "jsonl", env=cli_env(database_url)
        )
        assert listed.returncode == 0, listed.stderr
        (dead,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert dead["attempts"] == len(FAST_RETRIES) + 1 and dead["last_error"] == "HTTP 500"
        # The dead event stops holding up its contact: the next one went on.
        assert [e["message_id"] for e in events_of(receiver.accepted)] == [
            f"wamid.{DE}.0",
            f"wamid.{DE}.2",
        ]

        broken.clear()
        requeued = run_wabahook("redeliver", str(dead["id"]), env=cli_env(database_url))
        assert requeued.returncode == 0, requeued.stderr
        assert b"1 dead deliveries queued again" in requeued.stdout
        accepted = await receiver.wait_accepted(3)

        expected = {"delivered_total": 3, "failed_total": len(FAST_RETRIES) + 1, "dead_total": 1}

        async def counted() -> bool:
            shown = await dispatch_metrics(url)
            return {name: shown[name] for name in expected} == expected

        await wait_until(counted, what="the dispatcher's counts on /metrics")
        assert (await dispatch_metrics(url))["leader"] == 1

    assert accepted[-1].json()["message_id"] == f"wamid.{DE}.1"
    assert await states(db) == {"delivered": 3}


async def test_redeliver_without_ids_or_filter_is_refused(database_url: str) -> None:
    result = run_wabahook("redeliver", env=cli_env(database_url))
    assert result.returncode == 2
    assert b"name delivery ids, or --channel, --since, --until or --all" in result.stderr


async def test_replay_hands_stored_events_on_again(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    channels = tmp_path / "channels.toml"
    channels.write_text('[channels.quiet]\nforward_url = ""\n')
    config = settings(database_url, tmp_path, receiver, channels_file=str(channels))
    with running_server(config) as url, running_dispatcher(config):
        await post(url, conversation(2))
        await post(url, [cloud_text("wamid.elsewhere")], channel="other")
        await post(url, [cloud_text("wamid.quiet")], channel="quiet")  # handed on to nobody
        first = await receiver.wait_accepted(7)
        environment = cli_env(database_url)
        environment.update(
            settings_environment({"forward_url": receiver.url, "channels_file": str(channels)})
        )
        replayed = run_wabahook("replay", "--since", "1h", "--kind", "message", env=environment)
        assert replayed.returncode == 0, replayed.stderr
        assert b"7 events queued to be handed on again" in replayed.stdout  # not "quiet"'s
        accepted = await receiver.wait_accepted(14)
        without_target = run_wabahook("replay", "--since", "1h", env=cli_env(database_url))
        assert without_target.returncode == 2, without_target.stderr

    again = events_of(accepted[7:])
    assert by_contact([e for e in again if e["channel"] == "main"]) == expected_order(2)
    assert {e["id"] for e in again} == {e["id"] for e in events_of(first)}  # "other"'s too
    # A replay is a new delivery: receivers that deduplicate by webhook-id take it.
    assert not {r.headers["webhook-id"] for r in accepted[7:]} & {
        r.headers["webhook-id"] for r in first
    }


async def test_bodies_mode_forwards_each_body_byte_for_byte_with_metas_signature(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    bodies = [*conversation(2), CLOUD_STATUS, cloud_text("wamid.last")]
    config = settings(
        database_url, tmp_path, receiver, forward_mode="bodies", forward_app_secret=APP_SECRET
    )
    with running_server(config) as url, running_dispatcher(config):
        await post(url, bodies)
        await post(url, bodies[:2])  # redelivered: stored again, but no new events
        accepted = await receiver.wait_accepted(len(bodies))
        await post(url, [cloud_text("wamid.after")])  # what came after is not stuck behind
        accepted = await receiver.wait_accepted(len(bodies) + 1)

    assert [r.body for r in accepted] == [*bodies, cloud_text("wamid.after")]
    verifier = standardwebhooks.Webhook(SECRET)
    for received in accepted:
        verifier.verify(received.body, received.headers)
        expected = hmac.new(APP_SECRET.encode(), received.body, hashlib.sha256).hexdigest()
        assert received.headers["x-hub-signature-256"] == f"sha256={expected}"


async def test_each_channel_may_have_its_own_target_or_none(
    database_url: str, tmp_path: Path, receiver: Receiver, db: asyncpg.Connection
) -> None:
    channels = tmp_path / "channels.toml"
    async with receiving() as crm:
        channels.write_text(
            f'[channels.crm]\nforward_url = "{crm.url}"\n\n[channels.quiet]\nforward_url = ""\n'
        )
        config = settings(database_url, tmp_path, receiver, channels_file=str(channels))
        with running_server(config) as url, running_dispatcher(config):
            await post(url, [cloud_text("wamid.quiet")], channel="quiet")
            await post(url, [cloud_text("wamid.crm")], channel="crm")
            await post(url, [cloud_text("wamid.main")], channel="main")
            (to_crm,) = await crm.wait_accepted(1)
            (to_main,) = await receiver.wait_accepted(1)

    assert to_crm.json()["message_id"] == "wamid.crm"
    assert to_main.json()["message_id"] == "wamid.main"
    rows = await db.fetch("SELECT channel FROM wabahook_deliveries ORDER BY channel")
    assert [row["channel"] for row in rows] == ["crm", "main"]  # nothing for "quiet"


async def test_a_handler_is_called_with_each_event_and_retried_when_it_raises(
    database_url: str, tmp_path: Path, receiver: Receiver, db: asyncpg.Connection
) -> None:
    log = tmp_path / "handled.jsonl"
    config = settings(
        database_url, tmp_path, receiver, forward_url=None, handler="tests.handlers:record"
    )
    bodies = [cloud_text("wamid.one"), cloud_text("wamid.raise"), cloud_text("wamid.three")]
    with running_server(config) as url, running_dispatcher(config, env={"HANDLER_LOG": str(log)}):
        await post(url, bodies)

        async def all_handled() -> bool:
            return await states(db) == {"delivered": 3}

        await wait_until(all_handled, what="the handler to take every event")

    calls = [msgspec.json.decode(line) for line in log.read_bytes().splitlines()]
    # The raising call is made again before the contact's next event: order holds.
    assert [c["message_id"] for c in calls] == [
        "wamid.one",
        "wamid.raise",
        "wamid.raise",
        "wamid.three",
    ]
    assert calls[0]["payload"]["text"]["body"]  # the payload arrives decoded
    failed = await db.fetchval("SELECT attempts FROM wabahook_deliveries ORDER BY id OFFSET 1")
    assert failed == 2


async def test_two_dispatchers_deliver_once_and_the_survivor_takes_over(
    database_url: str, tmp_path: Path, receiver: Receiver, db: asyncpg.Connection
) -> None:
    config = settings(database_url, tmp_path, receiver)
    # One as `serve` starts it, one as an operator runs `wabahook dispatch` on another host.
    command_env = scrubbed_environment(
        settings_environment(
            {
                "database_url": database_url,
                "data_dir": str(tmp_path),
                "forward_url": receiver.url,
                "forward_secret": SECRET,
                "metrics_listen": "off",
            }
        )
    )
    one = start_dispatcher(config)
    two = start_group([*wabahook_command(), "dispatch"], env=command_env)
    try:
        with running_server(config) as url:
            await post(url, conversation(10, tag="a"))
            await receiver.wait_accepted(30)

            async def recorded() -> bool:  # so the kill cuts no attempt short
                return await states(db) == {"delivered": 30}

            await wait_until(recorded, what="the 30 deliveries to be recorded")
            leader = await db.fetchval("SELECT leader FROM wabahook_dispatch_cursor")
            leading = one if leader.endswith(f":{one.pid}") else two
            assert leader.endswith(f":{leading.pid}")
            kill_group(leading)

            await post(url, conversation(10, tag="b"))
            accepted = await receiver.wait_accepted(60)
            survivor = two if leading is one else one
            assert (await db.fetchval("SELECT leader FROM wabahook_dispatch_cursor")).endswith(
                f":{survivor.pid}"
            )
    finally:
        stop_group(one)
        stop_group(two)

    events = events_of(accepted)
    assert len(events) == 60 and len({e["id"] for e in events}) == 60  # none twice
    assert by_contact(events) == {
        c: expected_order(10, tag="a")[c] + expected_order(10, tag="b")[c] for c in CONTACTS
    }


async def test_a_stalled_leader_is_taken_over_and_cannot_deliver_after(
    database_url: str, tmp_path: Path, receiver: Receiver, db: asyncpg.Connection
) -> None:
    config = settings(database_url, tmp_path, receiver, dispatch_stall_s=1.0)
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    one = start_dispatcher(config, logs[0])
    try:

        async def one_leads() -> bool:
            leader = await db.fetchval("SELECT leader FROM wabahook_dispatch_cursor")
            return leader is not None and leader.endswith(f":{one.pid}")

        await wait_until(one_leads, what="the first dispatcher to lead")
        two = start_dispatcher(config, logs[1])
        try:
            os.kill(one.pid, signal.SIGSTOP)
            with running_server(config) as url:
                await post(url, conversation(3))
                accepted = await receiver.wait_accepted(9)
                os.kill(one.pid, signal.SIGCONT)

                async def one_knows() -> bool:
                    return b"dispatch_lost_lead" in logs[0].read_bytes()

                await wait_until(one_knows, what="the stalled dispatcher to find its lead gone")
                await post(url, conversation(1, tag="later"))
                accepted = await receiver.wait_accepted(12)
        finally:
            stop_group(two)
    finally:
        os.kill(one.pid, signal.SIGCONT)
        stop_group(one)

    assert b"dispatch_takeover" in logs[1].read_bytes()
    events = events_of(accepted)
    assert len({e["id"] for e in events}) == len(events) == 12


async def test_kill9_of_the_server_group_mid_delivery_loses_nothing(
    database_url: str, tmp_path: Path, receiver: Receiver, db: asyncpg.Connection
) -> None:
    """`wabahook serve` with one more variable, killed while attempts are in flight."""
    receiver.answer = lambda headers, body: Answer(hang=True)
    env = scrubbed_environment(
        settings_environment(
            {
                "database_url": database_url,
                "data_dir": str(tmp_path),
                "forward_url": receiver.url,
                "forward_timeout_s": 30,
                "forward_retries": "0.05,0.05",
            }
        )
    )
    server = start_server(serve_argv, env=env, log=tmp_path / "serve.log")
    try:
        await wait_ready(server)
        await post(server.url, conversation(4))

        async def in_flight() -> bool:
            return len(receiver.received) == 3  # each contact's first, the others wait

        await wait_until(in_flight, what="attempts in flight")
    finally:
        kill_group(server.process)

    receiver.answer = lambda headers, body: Answer(200)
    server = start_server(serve_argv, env=env, log=tmp_path / "serve.log")
    try:
        await wait_ready(server)
        accepted = await receiver.wait_accepted(12)
    finally:
        server.stop()

    events = first_arrivals(events_of(accepted))
    assert len(events) == 12
    assert by_contact(events) == expected_order(4)
    assert await states(db) == {"delivered": 12}


async def test_dispatch_without_a_target_says_what_to_set(database_url: str) -> None:
    result = run_wabahook("dispatch", env=cli_env(database_url))
    assert result.returncode == 2
    assert b"set WABAHOOK_FORWARD_URL, WABAHOOK_HANDLER or a channel's forward_url" in result.stderr


async def test_serves_dispatcher_process_ends_with_its_parent(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """If serve dies alone (its group is not killed), its dispatcher does not live on."""
    config = settings(database_url, tmp_path, receiver)
    pid_file = tmp_path / "dispatcher.pid"
    parent = start_group(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys; "
            "child = subprocess.Popen([sys.executable, '-m', 'app.dispatcher', str(os.getpid())]); "
            f"open({str(pid_file)!r}, 'w').write(str(child.pid)); child.wait()",
        ],
        env={
            **scrubbed_environment({EXPORT_VARIABLE: msgspec.json.encode(config).decode()}),
            "PYTHONPATH": str(REPO),
        },
        cwd=REPO,
        log=tmp_path / "dispatcher.log",
    )
    try:

        async def started() -> bool:
            return pid_file.exists() and pid_file.read_text() != ""

        await wait_until(started, what="the dispatcher process to start")
        child = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()

        async def child_gone() -> bool:
            return not is_running(child)

        await wait_until(child_gone, what="the orphaned dispatcher to exit")
    finally:
        kill_group(parent)


async def test_serves_dispatcher_and_its_backend_yield_the_cpu_a_standalone_one_does_not(
    database_url: str,
    tmp_path: Path,
    receiver: Receiver,
    db: asyncpg.Connection,
    embedded_server: bool,
) -> None:
    if not embedded_server:
        pytest.skip("the embedded server runs on this machine; DATABASE_URL's may not")

    async def leading_backend(pid: int) -> int | None:
        """The backend of the dispatcher process `pid` once it leads (its priorities are set
        before it does)."""
        backend: int | None = await db.fetchval(
            "SELECT a.pid FROM wabahook_dispatch_cursor c, pg_stat_activity a "
            "WHERE c.leader LIKE '%:' || $1 AND a.application_name = 'wabahook-dispatch'",
            str(pid),
        )
        return backend

    async def leads(pid: int) -> bool:
        return await leading_backend(pid) is not None

    config = settings(database_url, tmp_path, receiver)
    with running_dispatcher(config, log=tmp_path / "beside-serve.log") as beside_serve:
        await wait_until(lambda: leads(beside_serve.pid), what="serve's dispatcher to lead")
        backend = await leading_backend(beside_serve.pid)
        assert backend is not None
        assert os.sched_getscheduler(beside_serve.pid) == os.SCHED_IDLE
        assert os.getpriority(os.PRIO_PROCESS, backend) == 19

    standalone = start_group(
        [*wabahook_command(), "dispatch"],
        env=cli_env(database_url) | settings_environment({"forward_url": receiver.url}),
        log=tmp_path / "standalone.log",
    )
    try:
        await wait_until(lambda: leads(standalone.pid), what="the standalone dispatcher to lead")
        backend = await leading_backend(standalone.pid)
        assert backend is not None
        assert os.sched_getscheduler(standalone.pid) == os.SCHED_OTHER
        # As every other session's backend, this test's own among them.
        ordinary = os.getpriority(os.PRIO_PROCESS, db.get_server_pid())
        assert os.getpriority(os.PRIO_PROCESS, backend) == ordinary
    finally:
        stop_group(standalone)
