"""`budget` and `soak`: the locust mix at a fixed rate against a real wabahook and PostgreSQL.

The verdict does not trust the server: the runner rebuilds every body that was answered 200
from the request log (the stream is deterministic), derives the events spec section 8 says
it holds, and compares that set, dedup included, with what PostgreSQL stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.normalise import normalise
from bench import pg, procs, report, servers
from bench.bodies import LargeStream, Mix
from tests.support.databases import fetch
from tests.support.processes import stop_group

BUDGET_MS = 5000.0  # 360dialog counts a delivery as failed without a 200 within 5 s
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
STOP_TIMEOUT_S = 30  # locust lets in-flight requests finish for this long at the end

EventKey = tuple[Any, ...]


@dataclass(frozen=True)
class Sent:
    stream: str  # "mix" or "large"
    index: int
    status: int
    latency_ms: float


@dataclass
class LoadResult:
    sent: list[Sent]
    seconds: float
    client_cpu: float
    server: procs.Usage
    postgres: procs.Usage | None
    kinds: dict[int, str] = field(default_factory=dict)  # mix index -> kind


def read_log(path: Path) -> list[Sent]:
    sent = []
    if path.exists():
        for line in path.read_text().splitlines():
            stream, index, status, latency = line.split()
            sent.append(Sent(stream, int(index), int(status), float(latency)))
    return sent


# The kinds keyed by their own id (docs/protocol.md §7); every other event by its body.
ID_KINDS = ("message", "status", "echo", "call")


def event_keys(channel: str, body: bytes) -> list[EventKey]:
    """Spec section 8's dedup key of each event in a body, derived here, not by the server."""
    digest = hashlib.sha256(body).digest()
    keys: list[EventKey] = []
    for event in normalise(body).events:
        if event.message_id is not None and event.kind in ID_KINDS:
            scope = (
                ("number", event.phone_number_id) if event.phone_number_id else ("channel", channel)
            )
            keys.append((event.kind, event.message_id, event.type, *scope))
        else:
            keys.append(("body", channel, digest, event.seq))
    return keys


def acknowledged_events(
    sent: Iterable[Sent], mix: Mix, large: LargeStream, kinds: dict[int, str] | None = None
) -> set[EventKey]:
    """The distinct events of every body answered 200; fills `kinds` with each mix index's kind."""
    ok = [s for s in sent if s.status == 200]
    mix_ok = {s.index for s in ok if s.stream == "mix"}
    last = max((s.index for s in sent if s.stream == "mix"), default=-1)
    expected: set[EventKey] = set()
    for request in mix:
        if request.index > last:
            break
        if kinds is not None:
            kinds[request.index] = request.kind
        if request.index in mix_ok:
            expected.update(event_keys(request.channel, request.body))
    for s in ok:
        if s.stream == "large":
            request = large.body(s.index)
            expected.update(event_keys(request.channel, request.body))
    return expected


STORED_EVENTS = """
SELECT e.kind, e.message_id, e.type, e.phone_number_id, e.channel, e.seq, r.sha256
FROM wabahook_events e JOIN wabahook_requests r ON r.id = e.request_id
"""


def stored_events(dsn: str) -> tuple[list[EventKey], int]:
    """The dedup key of every stored event (same derivation as above), and the request count."""

    async def run() -> tuple[list[EventKey], int]:
        rows = await fetch(dsn, STORED_EVENTS)
        requests = (await fetch(dsn, "SELECT count(*) FROM wabahook_requests"))[0][0]
        keys: list[EventKey] = []
        for r in rows:
            if r["message_id"] is not None and r["kind"] in ID_KINDS:
                pnid = r["phone_number_id"]
                scope = ("number", pnid) if pnid else ("channel", r["channel"])
                keys.append((r["kind"], r["message_id"], r["type"], *scope))
            else:
                keys.append(("body", r["channel"], bytes(r["sha256"]), r["seq"]))
        return keys, int(requests)

    return asyncio.run(run())


def run_locust(
    url: str,
    *,
    rate: float,
    seconds: int,
    user_rps: float,
    large_rps: float,
    large_size: int,
    run: str,
    seed: int,
    log: Path,
    placement: procs.Placement,
    server: procs.Server,
    postgres: pg.Postgres,
    rss_interval: float = 0.5,
) -> LoadResult:
    users = max(1, math.ceil(rate / user_rps))
    large_users = math.ceil(large_rps / 2) if large_rps > 0 else 0
    request_log = log.with_suffix(".requests")
    request_log.unlink(missing_ok=True)
    env = servers.child_env(
        {
            "BENCH_RUN": run,
            "BENCH_SEED": str(seed),
            "BENCH_USER_RPS": str(rate / users),
            "BENCH_LOG": str(request_log),
            "BENCH_LARGE_RPS": str(large_rps),
            "BENCH_LARGE_SIZE": str(large_size),
        }
    )
    total = users + large_users
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(total),
        "-r",
        str(total),
        "-t",
        f"{seconds}s",
        "-H",
        url,
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]
    began = time.monotonic()
    with (
        procs.Sampler([server.proc.pid], rss_interval) as server_usage,
        procs.Sampler(postgres.pids(), rss_interval) as pg_usage,
    ):
        proc = procs.spawn(argv, cpus=placement.client, env=env, log=log)
        with procs.Sampler([proc.pid], 1.0) as client_usage:
            try:
                proc.wait(seconds + STOP_TIMEOUT_S + 60)
            except subprocess.TimeoutExpired:
                print("  locust did not stop in time; killed it", file=sys.stderr)
            finally:
                stop_group(proc, procs.STOP_TIMEOUT)
    elapsed = time.monotonic() - began
    sent = read_log(request_log)
    if not sent:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        print(f"  locust sent nothing (exit {proc.returncode}); end of {log}:\n{tail}")
    return LoadResult(
        sent=sent,
        seconds=elapsed,
        client_cpu=client_usage.usage.cpu_seconds / elapsed,
        server=server_usage.usage,
        postgres=pg_usage.usage if postgres.embedded else None,
    )


def _kind_table(result: LoadResult) -> str:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for s in result.sent:
        kind = result.kinds.get(s.index, "?") if s.stream == "mix" else "cloud:3mb"
        by_kind[kind.split(":")[0] if kind.startswith("onprem") else kind].append(s.latency_ms)
    rows = []
    for kind, values in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        stats = report.latency_summary(values)
        rows.append([kind, len(values), stats["p50"], stats["p99"], stats["max"]])
    return report.table(["body kind", "requests", "p50 ms", "p99 ms", "max ms"], rows)


def run(
    *,
    command: str,
    rate: float,
    seconds: int,
    user_rps: float,
    large_rps: float,
    large_size: int,
    workers: int,
    settings: dict[str, str],
    database_url: str | None,
    pg_cpu: str,
    seed: int,
    warmup: float = 0.0,
) -> bool:
    """One budget (or soak) run; prints everything and returns whether every check passed."""
    placement = procs.Placement.plan(pg_cpu)
    run_id = secrets.token_hex(3)
    workdir = report.RESULTS_DIR / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
    workdir.mkdir(parents=True)
    print(
        f"== {command}: {rate:g} requests/s of the 360dialog mix for {seconds} s "
        f"against wabahook ({workers} worker{'s' if workers > 1 else ''}) =="
    )
    with pg.Postgres(database_url, placement.postgres) as postgres:
        report.print_environment(
            {
                "placement": placement.describe(),
                "database": postgres.describe(),
                "settings": ", ".join(f"WABAHOOK_{k.upper()}={v}" for k, v in settings.items())
                or "defaults",
                "run": f"{run_id} (seed {seed}); logs in {workdir}",
            }
        )
        dsn = postgres.create_database(f"bench_{command}_{run_id}")
        with servers.wabahook(
            database_url=dsn,
            data_dir=workdir / "data",
            cpus=placement.server,
            log=workdir / "server.log",
            workers=workers,
            settings=settings,
        ) as server:
            result = run_locust(
                server.url,
                rate=rate,
                seconds=seconds,
                user_rps=user_rps,
                large_rps=large_rps,
                large_size=large_size,
                run=run_id,
                seed=seed,
                log=workdir / "locust.log",
                placement=placement,
                server=server,
                postgres=postgres,
                rss_interval=1.0 if command == "soak" else 0.5,
            )
        # Counted after the server stopped: anything it committed for a request the client gave
        # up on shows as a difference.
        stored, stored_requests = stored_events(dsn)
    expected = acknowledged_events(
        result.sent, Mix(seed, run_id), LargeStream(run_id, large_size), result.kinds
    )
    return _print_result(
        command,
        rate,
        seconds,
        result,
        expected,
        stored,
        stored_requests,
        large_rps,
        warmup,
        placement,
        run_id,
    )


def _print_result(
    command: str,
    rate: float,
    seconds: int,
    result: LoadResult,
    expected: set[EventKey],
    stored: list[EventKey],
    stored_requests: int,
    large_rps: float,
    warmup: float,
    placement: procs.Placement,
    run_id: str,
) -> bool:
    sent = result.sent
    ok = [s for s in sent if s.status == 200]
    statuses = Counter(s.status for s in sent)
    failures = len(sent) - len(ok)
    latencies = [s.latency_ms for s in sent]
    stats = report.latency_summary(latencies)
    large = [s.latency_ms for s in sent if s.stream == "large"]
    redeliveries = sum(1 for s in sent if result.kinds.get(s.index) == "redelivery")
    stored_set = set(stored)
    print("\nload")
    print(
        f"  requests   {len(sent):,} in {result.seconds:.1f} s "
        f"(offered {rate:g}/s for {seconds} s; "
        f"{redeliveries:,} redeliveries, {len(large):,} of 3 MB)"
    )
    print(f"  answers    {dict(sorted(statuses.items()))}  (status 0: no answer)")
    print("  latency    " + "  ".join(f"{k} {v:.1f} ms" for k, v in stats.items()))
    print(_kind_table(result))
    print("\nstorage")
    print(
        f"  requests   answered 200: {len(ok):,}   rows in wabahook_requests: {stored_requests:,}"
    )
    print(
        f"  events     distinct in acknowledged bodies: {len(expected):,}   "
        f"rows in wabahook_events: {len(stored):,} ({len(stored_set):,} distinct)"
    )
    missing, extra = expected - stored_set, stored_set - expected
    if missing or extra:
        print(
            f"  mismatch   {len(missing):,} acknowledged but not stored, "
            f"{len(extra):,} stored but not acknowledged; e.g. {sorted(missing or extra)[:3]}"
        )
    print("\nresources")
    print(
        f"  server     peak RSS {report.mib(result.server.peak_rss):.1f} MiB "
        f"(largest process {report.mib(result.server.peak_process_rss):.1f} MiB), "
        f"CPU {result.server.cpu_seconds / result.seconds:.0%} of one core"
    )
    if result.postgres is not None:
        print(f"  postgres   CPU {result.postgres.cpu_seconds / result.seconds:.0%} of one core")
    print(
        f"  locust     CPU {result.client_cpu:.0%} of one core"
        + ("  (near 100%: the client may have added latency)" if result.client_cpu > 0.9 else "")
    )
    verdict = report.Verdict()
    soak: dict[str, Any] = {}
    if command == "soak":
        soak = _print_soak(result, latencies, warmup, verdict)
    print("\nchecks")
    verdict.check("no failures", failures == 0, f"{failures} of {len(sent)}")
    verdict.check(
        "every acknowledgement inside the 5 s budget",
        stats["max"] < BUDGET_MS,
        f"max {stats['max']:.1f} ms",
    )
    verdict.check(
        "events stored == events acknowledged (after dedup)",
        stored_set == expected and len(stored) == len(stored_set),
        f"{len(stored):,} stored, {len(expected):,} acknowledged",
    )
    verdict.check(
        "requests stored == requests acknowledged",
        stored_requests == len(ok),
        f"{stored_requests:,} stored, {len(ok):,} answered 200",
    )
    verdict.check("load was sent", len(sent) > 0)
    if large_rps > 0 and large:
        print(f"  (target, not a check: 3 MB bodies under 1 s; max {max(large):.1f} ms)")
    verdict.print()
    path = report.save(
        command,
        {
            "rate": rate,
            "seconds": seconds,
            "placement": placement.describe(),
            "run": run_id,
            "requests": len(sent),
            "ok": len(ok),
            "statuses": statuses,
            "latency_ms": stats,
            "large_max_ms": max(large, default=None),
            "events_expected": len(expected),
            "events_stored": len(stored),
            "requests_stored": stored_requests,
            "server_peak_rss": result.server.peak_rss,
            "server_cpu_s": result.server.cpu_seconds,
            "client_cpu": result.client_cpu,
            **soak,
            "passed": verdict.passed,
        },
    )
    print(f"  figures saved to {path}")
    return verdict.passed


def _print_soak(
    result: LoadResult, latencies: list[float], warmup: float, verdict: report.Verdict
) -> dict[str, Any]:
    samples = result.server.rss_samples
    after = [s for s in samples if s[0] >= warmup] or samples
    # Medians of the first and last fifth after warm-up: a multi-MB body in flight at one
    # sampling instant must not read as growth.
    window = max(1, len(after) // 5)
    start = statistics.median(total for _, total, _ in after[:window])
    end = statistics.median(total for _, total, _ in after[-window:])
    growth = end / start - 1 if start else 0.0
    print(f"\nmemory (RSS of the server's processes; warm-up {warmup:.0f} s)")
    print(f"  at start        {report.mib(samples[0][1]):.1f} MiB")
    print(
        f"  after warm-up   {report.mib(start):.1f} MiB (median of {window} samples from "
        f"{after[0][0]:.0f} s)"
    )
    print(
        f"  at end          {report.mib(end):.1f} MiB (median of the last {window}): {growth:+.1%}"
    )
    print(f"  peak            {report.mib(result.server.peak_rss):.1f} MiB")
    step = max(1, len(samples) // 12)
    timeline = "  ".join(f"{t:.0f}s:{report.mib(total):.0f}" for t, total, _ in samples[::step])
    print(f"  timeline        {timeline} MiB")
    print("\nacknowledgement latency histogram")
    report.print_histogram(latencies)
    verdict.check("memory grows by at most 10% after warm-up", growth <= 0.10, f"{growth:+.1%}")
    largest = result.server.peak_process_rss
    print(
        f"  (target, not a check: one worker under 150 MB RSS; peak {report.mib(largest):.1f} MiB)"
    )
    return {
        "rss_after_warmup": start,
        "rss_end": end,
        "rss_growth": growth,
        "histogram": report.histogram(latencies),
    }
