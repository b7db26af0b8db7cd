"""`compare`: wabahook against the bare ASGI ceiling and a typical receiver, one stream, one run.

All three get the same wrk client, the same body stream (fresh message ids from the same
templates), the same core, and for the two that store, a fresh database each on the same
PostgreSQL. Ratios are only ever taken between figures of this run. The figures are drawn as
throughput against connections (`bench.charts`) when matplotlib is installed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import charts, pg, procs, report, servers, wrk
from bench.bodies import Template, cloud_text, single_event_templates
from tests.support.databases import fetch

WARMUP_S = 2.0  # seconds of load before measuring: connections, caches, prepared statements


@dataclass
class Point:
    """One measured wrk run against one server."""

    server: str
    label: str  # what varies: connections, a rate, a setting
    result: wrk.WrkResult
    server_usage: procs.Usage
    postgres_usage: procs.Usage | None
    connections: int = 0
    rate: float = 0.0  # requests/s wrk was paced to; 0: as fast as it could

    def row(self) -> list[Any]:
        r, seconds = self.result, self.result.seconds
        pg_cpu = f"{self.postgres_usage.cpu_seconds / seconds:.0%}" if self.postgres_usage else "-"
        return [
            self.server,
            self.label,
            round(r.rps),
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            report.mib(self.server_usage.peak_rss),
            f"{self.server_usage.cpu_seconds / seconds:.0%}",
            pg_cpu,
            f"{r.client_cpu:.0%}",
            r.failures,
        ]


HEADERS = [
    "server",
    "load",
    "req/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "RSS MiB",
    "srv CPU",
    "PG CPU",
    "wrk CPU",
    "failures",
]


@dataclass
class Contest:
    """Measurements of one server process, and what it stored."""

    name: str
    points: list[Point] = field(default_factory=list)
    ok_total: int = 0  # 200s over every run against this server, warm-up included
    connections_total: int = 0  # requests possibly in flight when a wrk run stopped
    stored: int | None = None  # rows holding events (None: stores nothing)


def measure(
    server: procs.Server,
    contest: Contest,
    templates: Sequence[Template],
    *,
    label: str,
    seconds: float,
    connections: int,
    placement: procs.Placement,
    postgres: pg.Postgres | None,
    rate: float = 0.0,
) -> Point:
    pids = [server.proc.pid]
    if postgres is not None:
        # Each run starts from a clean checkpoint: the previous run's WAL is not this run's cost.
        postgres.checkpoint()
    with (
        procs.Sampler(pids) as server_usage,
        procs.Sampler(postgres.pids() if postgres else []) as pg_usage,
    ):
        result = wrk.run(
            server.port,
            templates,
            seconds=seconds,
            connections=connections,
            cpus=placement.client,
            rate=rate,
        )
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.name} exited during the run; see {server.log}")
    contest.ok_total += result.ok
    contest.connections_total += connections
    point = Point(
        contest.name,
        label,
        result,
        server_usage.usage,
        pg_usage.usage if postgres and postgres.embedded else None,
        connections,
        rate,
    )
    contest.points.append(point)
    return point


def warm_up(
    server: procs.Server,
    contest: Contest,
    templates: Sequence[Template],
    placement: procs.Placement,
) -> None:
    result = wrk.run(
        server.port, templates, seconds=WARMUP_S, connections=64, cpus=placement.client
    )
    contest.ok_total += result.ok
    contest.connections_total += 64


def count_rows(dsn: str, table: str) -> int:
    return int(asyncio.run(fetch(dsn, f"SELECT count(*) FROM {table}"))[0][0])


def stream(body: str) -> list[Template]:
    if body == "mix":
        return single_event_templates()
    if body.startswith("cloud-text-"):
        return [cloud_text(int(body.removeprefix("cloud-text-")))]
    raise ValueError(f"unknown body stream {body}")


def run(
    *,
    seconds: float,
    connections: Sequence[int],
    body: str,
    database_url: str | None,
    pg_cpu: str,
    half: bool,
    settings: dict[str, str],
) -> bool:
    wrk.require_wrk()
    placement = procs.Placement.plan(pg_cpu)
    templates = stream(body)
    run_id = secrets.token_hex(3)
    workdir = report.RESULTS_DIR / f"compare-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
    workdir.mkdir(parents=True)
    size = sum(t.size for t in templates) / len(templates)
    print(
        f"== compare: {seconds:g} s per run, {', '.join(map(str, connections))} connections, "
        f"body stream {body} ({len(templates)} template(s), mean {size:,.0f} bytes) =="
    )
    contests: list[Contest] = []
    with pg.Postgres(database_url, placement.postgres) as postgres:
        report.print_environment(
            {
                "placement": placement.describe(),
                "database": postgres.describe(),
                "client": "wrk, 1 thread, Lua script filling fresh ids into the templates",
                "logs": str(workdir),
            }
        )
        starters: list[tuple[str, Callable[[], AbstractContextManager[procs.Server]], str | None]]
        wabahook_dsn = postgres.create_database(f"bench_wabahook_{run_id}")
        unmetered_dsn = postgres.create_database(f"bench_unmetered_{run_id}")
        typical_dsn = postgres.create_database(f"bench_typical_{run_id}")
        starters = [
            ("bare", lambda: servers.bare(cpus=placement.server, log=workdir / "bare.log"), None),
            (
                "wabahook",
                lambda: servers.wabahook(
                    database_url=wabahook_dsn,
                    data_dir=workdir / "data",
                    cpus=placement.server,
                    log=workdir / "wabahook.log",
                    settings=settings,
                ),
                wabahook_dsn,
            ),
            (
                # The same server with metrics off, to show what counting costs.
                "unmetered",
                lambda: servers.wabahook(
                    database_url=unmetered_dsn,
                    data_dir=workdir / "data-unmetered",
                    cpus=placement.server,
                    log=workdir / "unmetered.log",
                    settings={**settings, "metrics": "false"},
                ),
                unmetered_dsn,
            ),
            (
                "typical",
                lambda: servers.typical(
                    database_url=typical_dsn, cpus=placement.server, log=workdir / "typical.log"
                ),
                typical_dsn,
            ),
        ]
        for name, start, dsn in starters:
            contest = Contest(name)
            contests.append(contest)
            with start() as server:
                warm_up(server, contest, templates, placement)
                for n in connections:
                    point = measure(
                        server,
                        contest,
                        templates,
                        label=f"{n} conns",
                        seconds=seconds,
                        connections=n,
                        placement=placement,
                        postgres=postgres if dsn else None,
                    )
                    _progress(point)
                if half and name == "wabahook":
                    top = contest.points[0].result.rps
                    point = measure(
                        server,
                        contest,
                        templates,
                        label=f"{top / 2:,.0f}/s paced",
                        seconds=seconds,
                        connections=connections[0],
                        placement=placement,
                        postgres=postgres,
                        rate=top / 2,
                    )
                    _progress(point)
            if dsn in (wabahook_dsn, unmetered_dsn):
                contest.stored = count_rows(dsn, "wabahook_events")
            elif dsn == typical_dsn:
                contest.stored = count_rows(dsn, "webhook_events")
    return _print(contests, connections, half, workdir, body)


def _progress(point: Point) -> None:
    r = point.result
    print(f"  .. {point.server:<9} {point.label:<16} {r.rps:>9,.0f} req/s  p99 {r.p99_ms:.1f} ms")


def _by(contests: Sequence[Contest], name: str) -> Contest:
    return next(c for c in contests if c.name == name)


def _print(
    contests: Sequence[Contest], connections: Sequence[int], half: bool, workdir: Path, body: str
) -> bool:
    print(
        "\nthroughput and latency (latency from wrk; RSS is the peak over the run; "
        "CPU as share of one core)"
    )
    print(report.table(HEADERS, [p.row() for c in contests for p in c.points]))
    print(
        "\nrows stored vs 200s received (one event per body; a run that stops with requests "
        "in flight may store up to that many more)"
    )
    verdict = report.Verdict()
    for contest in contests:
        if contest.stored is None:
            print(f"  {contest.name:<9} stores nothing ({contest.ok_total:,} 200s)")
            continue
        extra = contest.stored - contest.ok_total
        print(
            f"  {contest.name:<9} {contest.stored:,} rows, {contest.ok_total:,} 200s ({extra:+,})"
        )
        verdict.check(
            f"{contest.name}: nothing acknowledged is missing",
            0 <= extra <= contest.connections_total,
            f"{extra:+,} rows against 200s",
        )
    for contest in contests:
        failures = sum(p.result.failures for p in contest.points)
        verdict.check(f"{contest.name}: no failed requests", failures == 0, str(failures))
    wabahook, bare, typical = (_by(contests, n) for n in ("wabahook", "bare", "typical"))
    print("\nratios (same run)")
    targets = report.Verdict()
    for i, n in enumerate(connections):
        w, b, t = (c.points[i].result for c in (wabahook, bare, typical))
        print(
            f"  {n:>4} connections  wabahook/bare {w.rps / b.rps:.2f}x   "
            f"wabahook/typical {w.rps / t.rps:.2f}x   "
            f"(wabahook {w.rps:,.0f}, bare {b.rps:,.0f}, typical {t.rps:,.0f} req/s)"
        )
        if i == 0:
            targets.check(
                f"wabahook >= 0.5x bare at {n} connections",
                w.rps >= 0.5 * b.rps,
                f"{w.rps / b.rps:.2f}x",
            )
            targets.check(
                f"wabahook >= 6x typical at {n} connections",
                w.rps >= 6 * t.rps,
                f"{w.rps / t.rps:.2f}x",
            )
            targets.check(
                f"wabahook p99 < 20 ms at max throughput, {n} connections",
                w.p99_ms < 20,
                f"{w.p99_ms:.1f} ms",
            )
    if half:
        paced = wabahook.points[-1].result
        targets.check(
            "wabahook p99 < 10 ms at half its max throughput",
            paced.p99_ms < 10,
            f"{paced.p99_ms:.1f} ms at {paced.rps:,.0f} req/s",
        )
    worst = max(p.result.max_ms for p in wabahook.points)
    targets.check("wabahook: no request over 1 s", worst < 1000, f"max {worst:.1f} ms")
    unmetered = _by(contests, "unmetered")
    for i, n in enumerate(connections):
        metered, off = wabahook.points[i].result.rps, unmetered.points[i].result.rps
        print(
            f"  {n:>4} connections  metrics on/off {metered / off:.3f}x  "
            f"({metered:,.0f} vs {off:,.0f} req/s)"
        )
    cost = 1 - wabahook.points[0].result.rps / unmetered.points[0].result.rps
    targets.check(
        f"metrics cost < 3% of throughput at {connections[0]} connections",
        cost < 0.03,
        f"{cost:+.1%}",
    )
    print("\ncorrectness")
    verdict.print()
    print("\ntargets of issue #4")
    targets.print()
    path = report.save(
        "compare",
        {
            "body": body,
            "targets_met": targets.passed,
            "correct": verdict.passed,
            "contests": [
                {
                    "name": c.name,
                    "ok": c.ok_total,
                    "stored": c.stored,
                    "points": [
                        {
                            "label": p.label,
                            "connections": p.connections,
                            "rate": p.rate,
                            **p.result.__dict__,
                            "rps": p.result.rps,
                            "peak_rss": p.server_usage.peak_rss,
                            "server_cpu_s": p.server_usage.cpu_seconds,
                            "postgres_cpu_s": p.postgres_usage.cpu_seconds
                            if p.postgres_usage
                            else None,
                        }
                        for p in c.points
                    ],
                }
                for c in contests
            ],
        },
    )
    print(f"  figures saved to {path}; server logs in {workdir}")
    charts.save_throughput_vs_connections(json.loads(path.read_text()), [workdir, charts.DOCS_DIR])
    return verdict.passed
