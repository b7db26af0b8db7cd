"""`dispatch`: how fast the dispatcher hands stored events on, how soon, at what cost, in
what memory.

Four measurements, each against a baseline of the same run:

- throughput: a backlog inserted by SQL, drained by `wabahook dispatch` into a fast local
  receiver, against the rate the same receiver takes from a plain aiohttp client loop;
- latency: `wabahook serve` with a forward URL at a fixed offered rate, from the 200 a sender
  got to the moment the receiver got the event;
- ingestion cost: `compare`'s wrk measurement of `wabahook serve`, dispatch off and on,
  interleaved;
- memory: the dispatcher's peak RSS working through a small and a large backlog, the receiver
  down for the first seconds so that deliveries retry.

The receiver and the two HTTP clients are this module's own processes (`python -m
bench.dispatch receive|baseline|offer`), started pinned like every other process of a run and
stopped by their process groups. The receiver stands for another host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import httptools
import msgspec
import psutil
import uvloop

from app.config import Config
from app.forwarding import Event
from app.normalise import normalise
from bench import compare, pg, procs, report, servers, wrk
from bench.bodies import (
    BASE_TS,
    KEY_HEX,
    NUMBERS,
    WABA_ID,
    Template,
    cloud_message_id,
    cloud_text,
    inbound_body,
    make_template,
)
from tests.support.cli import run_wabahook, wabahook_command
from tests.support.databases import connected
from tests.support.environment import settings_environment
from tests.support.processes import start_group, stop_group
from tests.support.servers import BACKLOG, ServerProcess

EVENTS_PER_CONTACT = 4  # backlog events per wa_id: many contacts, a few events each
INSERT_CHUNK = 100_000  # backlog rows per INSERT transaction
SMALL_BACKLOG = 10_000  # the memory baseline
BASELINE_S = 5.0  # seconds of the plain aiohttp client loop
LATENCY_WARMUP_S = 2.0  # seconds offered before the latency run counts
DRAIN_TIMEOUT_S = 1800.0  # longest a backlog may take to be handed on
SETTLE_TIMEOUT_S = 60.0  # longest the latency run waits for the last events to arrive
CHANNEL = NUMBERS[0].channel
DELIVERED = "SELECT count(*) FROM wabahook_deliveries WHERE state = 'delivered'"
STREAMS = ("many-contacts", "one-contact")
METRICS_INTERVAL_S = Config().metrics_interval_s

TARGET_RATE = 2000.0  # events/s handed on (issue)
TARGET_P99_MS = 250.0  # from the 200 to the receiver, at 1,000 events/s (issue)
TARGET_DROP = 0.10  # of ingestion throughput with dispatch on (issue)
MEMORY_GROWTH = 1.5  # peak RSS at the large backlog over the small: this benchmark's bound


# -- the receiver: answers every POST 200 at once, counts them, optionally records them ---------

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class _Receiving:
    """Records of one receiver process: how many POSTs, and (recording) when each came."""

    def __init__(self, record: bool) -> None:
        self.posts = 0
        self.record = record
        self.arrivals: list[tuple[float, bytes]] = []


class _ReceiverProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive on httptools: as little work per request as a server can do."""

    def __init__(self, state: _Receiving) -> None:
        self._state = state
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's own transport class

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        if self._state.record:
            self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        state = self._state
        if self._parser.get_method() == b"POST":
            state.posts += 1
            if state.record:
                state.arrivals.append((time.monotonic(), b"".join(self._body)))
            self._transport.write(_OK)
        else:  # GET: readiness, and how many POSTs so far
            count = str(state.posts).encode()
            head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(count)
            self._transport.write(head + count)
        if not self._parser.should_keep_alive():
            self._transport.close()


class _Envelope(msgspec.Struct):
    message_id: str | None = None


async def _receive(fd: int, record: Path | None) -> None:
    state = _Receiving(record is not None)
    loop = asyncio.get_running_loop()
    stopping = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set_result, None)
    sock = socket.socket(fileno=fd)
    server = await loop.create_server(lambda: _ReceiverProtocol(state), sock=sock, backlog=BACKLOG)
    await stopping
    server.close()
    if record is not None:
        # Decoded only now: while it receives, the receiver does no JSON work.
        decoder = msgspec.json.Decoder(_Envelope)
        times, ids = [], []
        for t, body in state.arrivals:
            times.append(t)
            ids.append(decoder.decode(body).message_id)
        record.write_text(json.dumps({"t": times, "message_id": ids}))


def _bound_socket() -> socket.socket:
    """A loopback socket bound but not listening yet: connections to it are refused until the
    receiver starts on it (the receiver is down), and no other process can take the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: a response is never held for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _url(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


@contextmanager
def receiver(
    sock: socket.socket,
    *,
    cpus: frozenset[int] | None,
    log: Path,
    nice: int = 0,
    record: Path | None = None,
) -> Iterator[procs.Server]:
    """The receiver listening on `sock` (this process's copy is closed once it runs, so the port
    closes with it); stopped by its process group afterwards."""
    argv = [sys.executable, "-m", "bench.dispatch", "receive", "--fd", str(sock.fileno())]
    argv += ["--nice", str(nice)] + (["--record", str(record)] if record else [])
    with sock:
        sock.listen(BACKLOG)
        process = start_group(
            procs.pin_argv(argv, cpus),
            env=servers.child_env({}),
            log=log,
            pass_fds=(sock.fileno(),),
        )
        port = sock.getsockname()[1]
    running = procs.Server("receiver", ServerProcess(process, port, log))
    try:
        running.wait_ready("/healthz")
        yield running
    finally:
        running.stop()


def posts(server: procs.Server) -> int:
    with urllib.request.urlopen(f"{server.url}/count", timeout=5) as answer:
        return int(answer.read())


# -- the clients: a plain aiohttp loop (the baseline), and a fixed-rate sender ----------------


def _envelope() -> bytes:
    """An events-mode POST body as the dispatcher sends it, for the baseline client."""
    message_id, wa_id = cloud_message_id("0" * KEY_HEX), "4915100000001"
    payload = _payload_template().replace("@MSGID", message_id).replace("@WAID", wa_id)
    event = Event(
        id=1,
        channel=CHANNEL,
        kind="message",
        type="text",
        message_id=message_id,
        wa_id=wa_id,
        user_id=None,
        group_id=None,
        phone_number_id=NUMBERS[0].phone_number_id,
        waba_id=WABA_ID,
        received_at=datetime.now(UTC),
        event_ts=datetime.fromtimestamp(BASE_TS, UTC),
        request_id=uuid.uuid4(),
        payload=msgspec.Raw(payload.encode()),
    )
    return msgspec.json.encode(event)


async def _baseline(url: str, concurrency: int, seconds: float) -> None:
    """POST the same envelope with `concurrency` requests in flight, as the dispatcher's
    session does (one pooled aiohttp session), for `seconds`; print the count."""
    body = _envelope()
    ok = failed = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=10),
        headers={"User-Agent": "wabahook"},
        skip_auto_headers=("Content-Type",),
    ) as session:
        deadline = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal ok, failed
            headers = {"Content-Type": "application/json"}
            while time.monotonic() < deadline:
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        success = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    success = False
                ok, failed = (ok + 1, failed) if success else (ok, failed + 1)

        began, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed, cpu = time.monotonic() - began, time.process_time() - cpu
    print(json.dumps({"ok": ok, "failed": failed, "seconds": elapsed, "cpu_s": cpu}))


async def _offer(url: str, rate: float, seconds: float, out: Path, run: str) -> None:
    """Post single-event Cloud bodies at `rate`/s for `seconds` on a fixed schedule (open loop:
    a slow answer does not delay the next send); record when each 200 came back."""
    count = round(rate * seconds)
    rng = random.Random(7)
    keys = [f"{run}{i:014x}" for i in range(count)]
    # Bodies rendered before the clock starts; wa_ids are drawn from 5,000 customers.
    bodies = [inbound_body(NUMBERS[0], "text", rng, key, BASE_TS) for key in keys]
    sent = [0.0] * count
    done = [0.0] * count
    status = [0] * count
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as session:

        async def send(i: int) -> None:
            sent[i] = time.monotonic()
            try:
                async with session.post(
                    url, data=bodies[i], headers={"Content-Type": "application/json"}
                ) as response:
                    await response.read()
                    status[i] = response.status
            except (aiohttp.ClientError, TimeoutError):
                status[i] = -1
            done[i] = time.monotonic()

        tasks = []
        start = time.monotonic() + 0.05
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i)))
        await asyncio.gather(*tasks)
    ids = [cloud_message_id(key) for key in keys]
    out.write_text(json.dumps({"message_id": ids, "sent": sent, "done": done, "status": status}))


# -- a backlog, by SQL -----------------------------------------------------------------------


def _payload_template() -> str:
    """A stored Cloud text message's payload as normalise keeps it, with @MSGID and @WAID holes."""
    body = inbound_body(NUMBERS[0], "text", random.Random(3), "0" * KEY_HEX, BASE_TS)
    event = normalise(body).events[0]
    assert event.message_id and event.wa_id
    return event.payload.replace(event.message_id, "@MSGID").replace(event.wa_id, "@WAID")


# One event per row of generate_series: a fresh message id, dedup key and request id each,
# contact i % $3; the xid column's default makes each chunk visible to the dispatcher.
_INSERT = """
INSERT INTO wabahook_events (dedup_key, received_on, request_id, seq, received_at, channel, kind,
                             type, message_id, wa_id, phone_number_id, waba_id, event_ts, payload)
SELECT decode(md5('bench:' || i), 'hex'), (now() AT TIME ZONE 'UTC')::date, gen_random_uuid(), 0,
       now(), $4, 'message', 'text', m.id, w.wa_id, $5, $6, to_timestamp($7),
       replace(replace($8, '@MSGID', m.id), '@WAID', w.wa_id)::json
FROM generate_series($1::bigint, $2::bigint) i,
     LATERAL (SELECT $9 || lpad(to_hex(i), $11, '0') || $10 AS id) m,
     LATERAL (SELECT (4915100000000 + i % $3)::text AS wa_id) w
"""


async def insert_backlog(dsn: str, events: int) -> int:
    """`events` stored events of `events / EVENTS_PER_CONTACT` contacts; the contacts count."""
    contacts = max(1, events // EVENTS_PER_CONTACT)
    prefix, suffix = cloud_message_id("@").split("@")
    fixed = (
        contacts,
        CHANNEL,
        NUMBERS[0].phone_number_id,
        WABA_ID,
        float(BASE_TS),
        _payload_template(),
        prefix,
        suffix,
        KEY_HEX,
    )
    async with connected(dsn) as connection:
        for first in range(1, events + 1, INSERT_CHUNK):
            last = min(events, first + INSERT_CHUNK - 1)
            await connection.execute(_INSERT, first, last, *fixed)
        # Statistics as a long-running database has them, not those of an empty table.
        await connection.execute("ANALYZE wabahook_events")
    return contacts


def _migrate(dsn: str, data_dir: Path) -> None:
    env = servers.child_env(settings_environment({"database_url": dsn, "data_dir": data_dir}))
    done = run_wabahook("migrate", env=env)
    if done.returncode != 0:
        raise RuntimeError(f"wabahook migrate failed:\n{(done.stdout + done.stderr).decode()}")


# -- the dispatcher alone: `wabahook dispatch` -----------------------------------------------


@contextmanager
def dispatcher(
    *, dsn: str, url: str, concurrency: int, cpus: frozenset[int] | None, log: Path, data_dir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    settings = {
        "database_url": dsn,
        "data_dir": data_dir,
        "forward_url": url,
        "forward_concurrency": concurrency,
        "log_level": "warning",
    }
    env = servers.child_env(settings_environment(settings))
    process = start_group(procs.pin_argv([*wabahook_command(), "dispatch"], cpus), env=env, log=log)
    try:
        yield process
    finally:
        stop_group(process, procs.STOP_TIMEOUT)


@dataclass
class Drain:
    """A backlog handed on: (monotonic time, delivered) samples from the start."""

    events: int
    started: float
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    @property
    def complete(self) -> bool:
        return self.delivered >= self.events

    @property
    def seconds(self) -> float:
        """From the dispatcher's start to the last delivery recorded."""
        return self.samples[-1][0] - self.started if self.samples else 0.0

    @property
    def rate(self) -> float:
        """Events/s from the first sample with a delivery to the end: without the start of the
        process (imports, connecting), which a long-running dispatcher does once."""
        first = next(((t, n) for t, n in self.samples if n > 0), None)
        if first is None or self.samples[-1][0] <= first[0]:
            return 0.0
        return (self.delivered - first[1]) / (self.samples[-1][0] - first[0])


def wait_drained(
    dsn: str,
    drain: Drain,
    process: subprocess.Popen[bytes],
    interval: float,
    timeout: float = DRAIN_TIMEOUT_S,
) -> Drain:
    """Poll the delivered count until it reaches the backlog (or time runs out)."""

    async def poll() -> None:
        async with connected(dsn) as connection:
            deadline = time.monotonic() + timeout
            while True:
                delivered = int(await connection.fetchval(DELIVERED))
                drain.samples.append((time.monotonic(), delivered))
                if delivered >= drain.events or time.monotonic() > deadline:
                    return
                if process.poll() is not None:
                    raise RuntimeError(f"the dispatcher exited with {process.returncode}")
                await asyncio.sleep(interval)

    asyncio.run(poll())
    return drain


async def _delivery_totals(dsn: str) -> dict[str, int]:
    async with connected(dsn) as connection:
        row = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'delivered') AS delivered, "
            "count(*) FILTER (WHERE state = 'dead') AS dead, "
            "coalesce(sum(attempts), 0) - count(*) FILTER (WHERE state = 'delivered') AS failed, "
            "count(*) AS deliveries FROM wabahook_deliveries"
        )
        return {key: int(row[key]) for key in ("delivered", "dead", "failed", "deliveries")}


def _child_json(argv: list[str], cpus: frozenset[int] | None, timeout: float) -> dict[str, Any]:
    """Run one of this module's clients to completion; its last output line, decoded."""
    process = start_group(
        procs.pin_argv(argv, cpus), env=servers.child_env({}), stdout=subprocess.PIPE
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        stop_group(process, procs.STOP_TIMEOUT)
    if process.returncode != 0:
        raise RuntimeError(f"{argv[3]} failed:\n{output.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
    return result


@contextmanager
def sampling(groups: dict[str, list[int]]) -> Iterator[dict[str, procs.Usage]]:
    """CPU and RSS of each group of process trees over the block (filled in at its end)."""
    with ExitStack() as stack:
        samplers = {name: stack.enter_context(procs.Sampler(pids)) for name, pids in groups.items()}
        yield {name: sampler.usage for name, sampler in samplers.items()}


def _dispatcher_pids(server: procs.Server) -> list[int]:
    """serve's dispatcher process (`python -m app.dispatcher`, a child of serve)."""
    pids = [p.pid for p in server.processes() if "app.dispatcher" in _cmdline(p)]
    if not pids:
        raise RuntimeError(f"serve started no dispatcher; see {server.log}")
    return pids


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _load() -> str:
    # Printed per part: what else ran on this shared machine shows in every figure.
    return f"load average {os.getloadavg()[0]:.2f}"


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Context:
    placement: procs.Placement
    postgres: pg.Postgres
    workdir: Path
    run_id: str
    concurrency: int
    correct: report.Verdict = field(default_factory=report.Verdict)
    targets: report.Verdict = field(default_factory=report.Verdict)
    results: dict[str, Any] = field(default_factory=dict)
    _databases: int = 0

    def database(self) -> tuple[str, Path]:
        """A fresh database, migrated, and a data directory of its own."""
        self._databases += 1
        n = self._databases
        dsn = self.postgres.create_database(f"bench_dispatch_{self.run_id}_{n}")
        data_dir = self.workdir / f"data{n}"
        _migrate(dsn, data_dir)
        return dsn, data_dir

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}-{self._databases}.log"


@dataclass
class Drained:
    drain: Drain
    usage: dict[str, procs.Usage]  # dispatcher, PostgreSQL, receiver
    totals: dict[str, int]
    received: int  # POSTs the receiver answered

    @property
    def ok(self) -> bool:
        return (
            self.drain.complete and self.totals["dead"] == 0 and self.received >= self.drain.events
        )

    def cpu(self, name: str) -> str:
        return f"{self.usage[name].cpu_seconds / self.drain.seconds:.0%}"


def drain_backlog(
    ctx: Context, events: int, *, down_s: float = 0.0, interval: float = 0.2
) -> Drained:
    """Insert a backlog, start a dispatcher, optionally with the receiver down for `down_s`,
    and wait until every event is delivered."""
    dsn, data_dir = ctx.database()
    began = time.monotonic()
    contacts = asyncio.run(insert_backlog(dsn, events))
    print(
        f"  .. {events:,} events of {contacts:,} contacts inserted in "
        f"{time.monotonic() - began:.1f} s"
    )
    ctx.postgres.checkpoint()
    sock = _bound_socket()
    with (
        dispatcher(
            dsn=dsn,
            url=_url(sock),
            concurrency=ctx.concurrency,
            cpus=ctx.placement.server,
            log=ctx.log("dispatch"),
            data_dir=data_dir,
        ) as process,
        sampling({"dispatcher": [process.pid], "PostgreSQL": ctx.postgres.pids()}) as usage,
    ):
        drain = Drain(events, time.monotonic())
        if down_s:
            time.sleep(down_s)  # connections refused: every attempt fails and is retried
            if process.poll() is not None:
                raise RuntimeError(f"the dispatcher exited; see {ctx.log('dispatch')}")
        with (
            receiver(sock, cpus=ctx.placement.client, log=ctx.log("receiver")) as downstream,
            sampling({"receiver": [downstream.proc.pid]}) as receiving,
        ):
            wait_drained(dsn, drain, process, interval)
            received = posts(downstream)
    totals = asyncio.run(_delivery_totals(dsn))
    return Drained(drain, {**usage, **receiving}, totals, received)


def throughput(ctx: Context, events: int) -> None:
    print(
        f"\n1. throughput: a backlog of {events:,} events, `wabahook dispatch` to the receiver "
        f"({_load()})"
    )
    drained = drain_backlog(ctx, events)
    drain = drained.drain
    sock = _bound_socket()
    with receiver(sock, cpus=ctx.placement.client, log=ctx.log("receiver-baseline")) as down:
        argv = [sys.executable, "-m", "bench.dispatch", "baseline", "--url", _url_of(down)]
        argv += ["--concurrency", str(ctx.concurrency), "--seconds", str(BASELINE_S)]
        with sampling({"receiver": [down.proc.pid]}) as receiving:
            base = _child_json(argv, ctx.placement.server, timeout=BASELINE_S + 60)
    base_rate = base["ok"] / base["seconds"]
    rate = drain.rate
    dispatcher_usage = drained.usage["dispatcher"]
    print(
        report.table(
            ["sender", "events", "seconds", "events/s", "CPU", "PG CPU", "receiver CPU", "RSS MiB"],
            [
                [
                    "wabahook dispatch",
                    drain.delivered,
                    round(drain.seconds, 2),
                    round(rate),
                    drained.cpu("dispatcher"),
                    drained.cpu("PostgreSQL") if ctx.postgres.embedded else "-",
                    drained.cpu("receiver"),
                    report.mib(dispatcher_usage.peak_rss),
                ],
                [
                    f"aiohttp loop, {ctx.concurrency} in flight",
                    base["ok"],
                    round(base["seconds"], 2),
                    round(base_rate),
                    f"{base['cpu_s'] / base['seconds']:.0%}",
                    "-",
                    f"{receiving['receiver'].cpu_seconds / base['seconds']:.0%}",
                    "-",
                ],
            ],
        )
    )
    print(
        f"  dispatcher / baseline {rate / base_rate:.2f}x  (the dispatcher's rate from its first "
        f"delivery; {events / drain.seconds:,.0f} events/s counting the process start)"
    )
    ctx.correct.check(
        "throughput: every event delivered and recorded, none dead",
        drained.ok,
        f"{drained.totals['delivered']:,} delivered, {drained.totals['dead']} dead, "
        f"{drained.received:,} POSTs received",
    )
    ctx.correct.check("baseline: no failed requests", base["failed"] == 0, str(base["failed"]))
    ctx.targets.check(
        f"dispatcher hands on >= {TARGET_RATE:,.0f} events/s",
        rate >= TARGET_RATE,
        f"{rate:,.0f} events/s",
    )
    ctx.results["throughput"] = {
        "events": events,
        "seconds": drain.seconds,
        "rate": rate,
        "baseline_rate": base_rate,
        "baseline": base,
        "cpu_s": {name: u.cpu_seconds for name, u in drained.usage.items()},
        "peak_rss": dispatcher_usage.peak_rss,
        "totals": drained.totals,
    }


def _url_of(server: procs.Server) -> str:
    return f"{server.url}/hook"


def latency(ctx: Context, rate: float, seconds: float) -> None:
    print(
        f"\n2. latency: `wabahook serve` forwarding, {rate:,.0f} single-event bodies/s for "
        f"{seconds:g} s (+{LATENCY_WARMUP_S:g} s warm-up; {_load()})"
    )
    dsn, data_dir = ctx.database()
    arrivals_file = ctx.workdir / "arrivals.json"
    sent_file = ctx.workdir / "sent.json"
    total_s = seconds + LATENCY_WARMUP_S
    sock = _bound_socket()
    with receiver(
        sock, cpus=ctx.placement.client, log=ctx.log("receiver"), record=arrivals_file
    ) as downstream:
        with servers.wabahook(
            database_url=dsn,
            data_dir=data_dir,
            cpus=ctx.placement.server,
            log=ctx.log("wabahook"),
            settings={"forward_url": _url_of(downstream)},
        ) as server:
            argv = [sys.executable, "-m", "bench.dispatch", "offer", "--url"]
            argv += [f"{server.url}/webhook/{CHANNEL}", "--rate", str(rate)]
            argv += ["--seconds", str(total_s), "--out", str(sent_file), "--run", ctx.run_id]
            client = start_group(
                procs.pin_argv(argv, ctx.placement.client), env=servers.child_env({})
            )
            try:
                groups = {
                    "serve": [server.proc.pid],
                    "dispatcher": _dispatcher_pids(server),
                    "PostgreSQL": ctx.postgres.pids(),
                    "client": [client.pid],
                    "receiver": [downstream.proc.pid],
                }
                with sampling(groups) as usage:
                    client.wait(total_s + 60)
            finally:
                stop_group(client, procs.STOP_TIMEOUT)
            sent = json.loads(sent_file.read_text())
            acknowledged = sum(1 for s in sent["status"] if s == 200)
            settle = time.monotonic() + SETTLE_TIMEOUT_S
            while posts(downstream) < acknowledged and time.monotonic() < settle:
                time.sleep(0.1)
            time.sleep(2 * METRICS_INTERVAL_S)  # the last hand-ons published for a scrape
            histogram = _handoff_histogram(server.url)
    warmup = round(rate * LATENCY_WARMUP_S)
    handoffs, acks, missing = _match(sent, json.loads(arrivals_file.read_text()), warmup)
    stats = report.latency_summary(handoffs)
    ack = report.latency_summary(acks)
    failed = sum(1 for s in sent["status"] if s != 200)
    print(f"  {len(acks):,} events measured ({failed} not acknowledged, {missing} never arrived)")
    print(
        report.table(
            ["from", "to", "p50 ms", "p90 ms", "p99 ms", "max ms", "min ms"],
            [
                ["the 200", "receiver", *_row(stats), min(handoffs, default=0.0)],
                ["send", "the 200", *_row(ack), min(acks, default=0.0)],
            ],
        )
    )
    usage["serve"].cpu_seconds -= usage["dispatcher"].cpu_seconds  # the dispatcher is its child
    shares = ", ".join(f"{name} {u.cpu_seconds / total_s:.0%}" for name, u in usage.items())
    print(f"  CPU, share of one core: {shares}")
    if histogram:
        print(
            f"  server's wabahook_dispatch_handoff_seconds (arrival to hand-on, warm-up "
            f"included): {histogram.get('0.25', 0):,.0f} of {histogram.get('+Inf', 0):,.0f} "
            f"within 250 ms, {histogram.get('0.1', 0):,.0f} within 100 ms"
        )
    ctx.correct.check(
        "latency: every acknowledged event reached the receiver",
        missing == 0 and failed == 0,
        f"{missing} missing, {failed} not acknowledged",
    )
    ctx.targets.check(
        f"p99 from the 200 to the receiver < {TARGET_P99_MS:g} ms at {rate:,.0f}/s",
        stats["p99"] < TARGET_P99_MS,
        f"{stats['p99']:.1f} ms",
    )
    ctx.results["latency"] = {
        "rate": rate,
        "seconds": seconds,
        "measured": len(acks),
        "missing": missing,
        "failed": failed,
        "handoff_ms": stats,
        "ack_ms": ack,
        "server_histogram": histogram,
        "cpu_s": {name: u.cpu_seconds for name, u in usage.items()},
    }


def _match(
    sent: dict[str, list[Any]], arrived: dict[str, list[Any]], warmup: int
) -> tuple[list[float], list[float], int]:
    """(ms from the 200 to the first arrival downstream, ms from send to the 200, events
    acknowledged that never arrived), for the events acknowledged after the warm-up."""
    first: dict[str, float] = {}
    for t, message_id in zip(arrived["t"], arrived["message_id"], strict=True):
        first.setdefault(message_id, t)
    handoffs, acks, missing = [], [], 0
    columns = (sent["message_id"], sent["sent"], sent["done"], sent["status"])
    for message_id, t_sent, t_done, status in list(zip(*columns, strict=True))[warmup:]:
        if status != 200:
            continue
        acks.append(1000 * (t_done - t_sent))
        if message_id in first:
            handoffs.append(1000 * (first[message_id] - t_done))
        else:
            missing += 1
    return handoffs, acks, missing


def _row(stats: dict[str, float]) -> list[float]:
    return [stats[k] for k in ("p50", "p90", "p99", "max")]


def _handoff_histogram(base_url: str) -> dict[str, float]:
    """Cumulative bucket counts of the server's wabahook_dispatch_handoff_seconds."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    buckets: dict[str, float] = {}
    for match in re.finditer(
        r'^wabahook_dispatch_handoff_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M
    ):
        buckets[match[1]] = float(match[2])
    return buckets


def many_contacts(size: int = 1024) -> Template:
    """compare's Cloud text body with a fresh wa_id per request: every event its own contact,
    so the dispatcher hands on with all of its concurrency."""
    base = cloud_text(size)
    wa_id = normalise(base.render(["0" * KEY_HEX])).events[0].wa_id
    assert wa_id is not None

    def build(holes: list[str]) -> bytes:
        return base.render([holes[0]]).replace(wa_id.encode(), holes[1].encode())

    return make_template(f"{base.name}-contacts", base.channel, build)


def _stream(name: str) -> list[Template]:
    # one-contact is compare's default stream as it is: one wa_id for every body.
    return [many_contacts()] if name == "many-contacts" else compare.stream("cloud-text-1024")


@dataclass
class IngestRun:
    round: int
    stream: str
    dispatch: bool
    point: compare.Point
    contest: compare.Contest
    dispatcher_cpu_s: float | None = None
    handed_on: int = 0

    @property
    def postgres_us(self) -> str:
        """PostgreSQL's CPU per acknowledged request: what the dispatcher adds there shows."""
        usage, ok = self.point.postgres_usage, self.point.result.ok
        return f"{usage.cpu_seconds / ok * 1e6:.0f}" if usage and ok else "-"


def ingestion(
    ctx: Context, seconds: float, rounds: int, connections: int, streams: Sequence[str]
) -> None:
    print(
        f"\n3. ingestion cost: compare's wrk run of `wabahook serve`, {connections} connections, "
        f"{seconds:g} s per run, dispatch off and on interleaved, {rounds} rounds ({_load()})"
    )
    print(
        "  the receiver stands for another host: pinned to the load generator's CPU, nice +10 "
        "(wrk and PostgreSQL go first); serve's dispatcher shares the server's CPU under "
        "SCHED_IDLE"
    )
    sock = _bound_socket()
    runs: list[IngestRun] = []
    with receiver(sock, cpus=ctx.placement.client, log=ctx.log("receiver"), nice=10) as down:
        for n in range(1, rounds + 1):
            for stream in streams:
                # Off first in odd rounds, on first in even ones: whatever drifts over a run
                # (the server's cache, WAL, the machine) weighs on both alike.
                for on in (False, True) if n % 2 else (True, False):
                    runs.append(
                        _ingest_run(ctx, n, stream, on, _url_of(down), seconds, connections)
                    )
    rows = []
    for run in runs:
        r, s = run.point.result, run.point.result.seconds
        rows.append(
            [
                run.round,
                run.stream,
                "on" if run.dispatch else "off",
                round(r.rps),
                r.p50_ms,
                r.p99_ms,
                f"{run.point.server_usage.cpu_seconds / s:.0%}",
                f"{run.dispatcher_cpu_s / s:.0%}" if run.dispatcher_cpu_s is not None else "-",
                f"{run.point.postgres_usage.cpu_seconds / s:.0%}"
                if run.point.postgres_usage
                else "-",
                run.postgres_us,
                f"{run.handed_on:,} of {run.contest.stored:,}" if run.dispatch else "-",
                r.failures,
            ]
        )
    print(
        report.table(
            [
                "round",
                "stream",
                "dispatch",
                "req/s",
                "p50 ms",
                "p99 ms",
                "srv CPU",
                "of it dispatcher",
                "PG CPU",
                "PG µs/req",
                "handed on by the end",
                "failures",
            ],
            rows,
        )
    )
    ratios = {}
    for stream in streams:
        with_ = [x.point.result.rps for x in runs if x.stream == stream and x.dispatch]
        without = [x.point.result.rps for x in runs if x.stream == stream and not x.dispatch]
        ratio = (sum(with_) / len(with_)) / (sum(without) / len(without))
        ratios[stream] = ratio
        pairs = ", ".join(f"{a / b:.2f}x" for a, b in zip(with_, without, strict=True))
        print(f"  {stream:<14} dispatch on/off {ratio:.3f}x (mean of rounds; per round {pairs})")
        ctx.targets.check(
            f"ingestion drops <= {TARGET_DROP:.0%} with dispatch on ({stream})",
            ratio >= 1 - TARGET_DROP,
            f"{1 - ratio:+.1%} drop",
        )
    failures = sum(x.point.result.failures for x in runs)
    ctx.correct.check("ingestion: no failed requests", failures == 0, str(failures))
    # As compare checks it: a run stopped with requests in flight may store that many more.
    extra = [(x.contest.stored or 0) - x.contest.ok_total for x in runs]
    ctx.correct.check(
        "ingestion: nothing acknowledged is missing",
        all(0 <= e <= x.contest.connections_total for e, x in zip(extra, runs, strict=True)),
        f"stored - 200s per run: {', '.join(f'{e:+,}' for e in extra)}",
    )
    ctx.results["ingestion"] = {
        "ratios": ratios,
        "runs": [
            {
                "round": x.round,
                "stream": x.stream,
                "dispatch": x.dispatch,
                "rps": x.point.result.rps,
                **x.point.result.__dict__,
                "server_cpu_s": x.point.server_usage.cpu_seconds,
                "dispatcher_cpu_s": x.dispatcher_cpu_s,
                "postgres_cpu_s": x.point.postgres_usage.cpu_seconds
                if x.point.postgres_usage
                else None,
                "stored": x.contest.stored,
                "acknowledged": x.contest.ok_total,
                "handed_on": x.handed_on,
            }
            for x in runs
        ],
    }


def _ingest_run(
    ctx: Context, n: int, stream: str, on: bool, url: str, seconds: float, connections: int
) -> IngestRun:
    dsn, data_dir = ctx.database()
    name = f"dispatch {'on' if on else 'off'}"
    contest = compare.Contest(name)
    templates = _stream(stream)
    with servers.wabahook(
        database_url=dsn,
        data_dir=data_dir,
        cpus=ctx.placement.server,
        log=ctx.log("wabahook"),
        settings={"forward_url": url, "forward_concurrency": str(ctx.concurrency)} if on else {},
    ) as server:
        forwarding = _dispatcher_pids(server) if on else []
        compare.warm_up(server, contest, templates, ctx.placement)
        with procs.Sampler(forwarding) as dispatcher_usage:
            point = compare.measure(
                server,
                contest,
                templates,
                label=f"{connections} conns",
                seconds=seconds,
                connections=connections,
                placement=ctx.placement,
                postgres=ctx.postgres,
            )
        totals = asyncio.run(_delivery_totals(dsn)) if on else {"delivered": 0}
    contest.stored = compare.count_rows(dsn, "wabahook_events")
    run = IngestRun(
        n,
        stream,
        on,
        point,
        contest,
        dispatcher_usage.usage.cpu_seconds if on else None,
        totals["delivered"],
    )
    print(
        f"  .. round {n} {stream:<14} {name:<13} {point.result.rps:>8,.0f} req/s  "
        f"p99 {point.result.p99_ms:.1f} ms"
    )
    return run


def memory(ctx: Context, backlogs: Sequence[int], down_s: float) -> None:
    print(
        f"\n4. memory: the dispatcher's peak RSS through a backlog of "
        f"{' and '.join(f'{b:,}' for b in backlogs)} events, the receiver down for the first "
        f"{down_s:g} s ({_load()})"
    )
    rows, peaks = [], []
    for events in backlogs:
        # Counting over a million rows costs PostgreSQL too: poll less often.
        interval = 0.2 if events <= 100_000 else 2.0
        drained = drain_backlog(ctx, events, down_s=down_s, interval=interval)
        drain, usage = drained.drain, drained.usage["dispatcher"]
        peaks.append(usage.peak_process_rss)
        sizes = sorted(size for _, size, _ in usage.rss_samples)
        rows.append(
            [
                events,
                round(drain.seconds, 1),
                round(drain.rate),
                drained.totals["failed"],
                drained.cpu("dispatcher"),
                drained.cpu("PostgreSQL") if ctx.postgres.embedded else "-",
                report.mib(report.percentile(sizes, 50)),
                report.mib(usage.peak_process_rss),
            ]
        )
        ctx.correct.check(
            f"memory run of {events:,}: every event delivered and recorded, none dead",
            drained.ok,
            f"{drained.totals['delivered']:,} delivered, {drained.totals['dead']} dead",
        )
        ctx.results.setdefault("memory", []).append(
            {
                "events": events,
                "seconds": drain.seconds,
                "rate": drain.rate,
                "totals": drained.totals,
                "cpu_s": {name: u.cpu_seconds for name, u in drained.usage.items()},
                "rss_samples": usage.rss_samples,
                "peak_rss": usage.peak_process_rss,
            }
        )
    headers = ["backlog", "seconds", "events/s", "failed attempts", "CPU", "PG CPU"]
    print(report.table([*headers, "median RSS MiB", "peak RSS MiB"], rows))
    if len(peaks) > 1:
        growth = peaks[-1] / peaks[0]
        print(f"  peak RSS, {backlogs[-1]:,} / {backlogs[0]:,} backlog: {growth:.2f}x")
        ctx.targets.check(
            f"peak RSS at {backlogs[-1]:,} within {MEMORY_GROWTH}x of {backlogs[0]:,}",
            growth <= MEMORY_GROWTH,
            f"{growth:.2f}x",
        )


PARTS = ("throughput", "latency", "ingestion", "memory")


def run(
    *,
    parts: Sequence[str],
    events: int,
    concurrency: int,
    rate: float,
    latency_seconds: float,
    ingest_seconds: float,
    rounds: int,
    connections: int,
    streams: Sequence[str],
    backlog: int,
    receiver_down: float,
    database_url: str | None,
    pg_cpu: str,
) -> bool:
    if "ingestion" in parts:
        wrk.require_wrk()
    placement = procs.Placement.plan(pg_cpu)
    run_id = secrets.token_hex(3)
    workdir = report.RESULTS_DIR / f"dispatch-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
    workdir.mkdir(parents=True)
    print(f"== dispatch: {', '.join(parts)}; forward_concurrency {concurrency} ==")
    with pg.Postgres(database_url, placement.postgres) as postgres:
        report.print_environment(
            {
                "placement": placement.describe(),
                "receiver": "this module's httptools server on the load generator's CPU "
                "(another host's stand-in), 200 with an empty body",
                "database": postgres.describe(),
                "logs": str(workdir),
            }
        )
        ctx = Context(placement, postgres, workdir, run_id, concurrency)
        if "throughput" in parts:
            throughput(ctx, events)
        if "latency" in parts:
            latency(ctx, rate, latency_seconds)
        if "ingestion" in parts:
            ingestion(ctx, ingest_seconds, rounds, connections, streams)
        if "memory" in parts:
            backlogs = sorted({SMALL_BACKLOG, backlog})
            memory(ctx, backlogs, receiver_down)
    print("\ncorrectness")
    ctx.correct.print()
    print("\ntargets")
    ctx.targets.print()
    path = report.save(
        "dispatch",
        {"correct": ctx.correct.passed, "targets_met": ctx.targets.passed, **ctx.results},
    )
    print(f"  figures saved to {path}; logs in {workdir}")
    return ctx.correct.passed


# -- this module's child processes -----------------------------------------------------------


def _main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch")
    roles = parser.add_subparsers(dest="role", required=True)
    receive = roles.add_parser("receive", help="the fast receiver, on an inherited socket")
    receive.add_argument("--fd", type=int, required=True)
    receive.add_argument("--nice", type=int, default=0)
    receive.add_argument("--record", type=Path)
    baseline = roles.add_parser("baseline", help="a plain aiohttp client loop")
    baseline.add_argument("--url", required=True)
    baseline.add_argument("--concurrency", type=int, required=True)
    baseline.add_argument("--seconds", type=float, required=True)
    offer = roles.add_parser("offer", help="single-event bodies at a fixed rate")
    offer.add_argument("--url", required=True)
    offer.add_argument("--rate", type=float, required=True)
    offer.add_argument("--seconds", type=float, required=True)
    offer.add_argument("--out", type=Path, required=True)
    offer.add_argument("--run", required=True)
    args = parser.parse_args(argv)
    if args.role == "receive":
        os.nice(args.nice)
        uvloop.run(_receive(args.fd, args.record))
    elif args.role == "baseline":
        uvloop.run(_baseline(args.url, args.concurrency, args.seconds))
    else:
        uvloop.run(_offer(args.url, args.rate, args.seconds, args.out, args.run))


if __name__ == "__main__":
    _main(sys.argv[1:])
