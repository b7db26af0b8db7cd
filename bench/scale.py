"""`scale`: how wabahook's cost grows with body size, flush settings and worker processes.

Each dimension is measured against a baseline of the same run: body sizes against the bare
ASGI app at that size, settings against wabahook's defaults, two workers against one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app import storage
from app.config import Config
from app.records import IncomingRequest, incoming
from bench import pg, procs, report, servers, wrk
from bench.bodies import cloud_text
from bench.compare import Contest, Point, measure, warm_up

BATCH_CONNECTIONS = 256
LARGE_BODY = 65536  # above this, fewer connections: 64 x 3 MB in flight measures the allocator


def run(
    *,
    seconds: float,
    dimensions: Sequence[str],
    sizes: Sequence[int],
    flush_ms: Sequence[float],
    batch_rows: Sequence[int],
    connections: int,
    pg_cpu: str,
    database_url: str | None,
) -> bool:
    wrk.require_wrk()
    placement = procs.Placement.plan(pg_cpu)
    run_id = secrets.token_hex(3)
    workdir = report.RESULTS_DIR / f"scale-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
    workdir.mkdir(parents=True)
    print(f"== scale: {', '.join(dimensions)}; {seconds:g} s per run ==")
    results: dict[str, Any] = {}
    with pg.Postgres(database_url, placement.postgres) as postgres:
        report.print_environment(
            {
                "placement": placement.describe(),
                "database": postgres.describe(),
                "logs": str(workdir),
            }
        )
        ctx = _Context(seconds, connections, placement, postgres, workdir, run_id)
        if "size" in dimensions:
            results["size"] = ctx.sizes(sizes)
        if "flush" in dimensions:
            results["flush"] = ctx.setting("flush_ms", [_num(v) for v in flush_ms], connections)
        if "batch" in dimensions:
            # A cap only binds when more rows wait than it allows: at 64 connections no batch
            # exceeds 64 requests, so the batch dimension runs with more connections.
            results["batch"] = ctx.setting(
                "batch_rows", list(batch_rows), max(connections, BATCH_CONNECTIONS)
            )
        if "workers" in dimensions:
            results["workers"] = ctx.workers()
        if "copy" in dimensions:
            results["copy"] = ctx.copy_rate()
    path = report.save("scale", results)
    print(f"\n  figures saved to {path}; server logs in {workdir}")
    failures: int = sum(row.get("failures", 0) for rows in results.values() for row in rows)
    return failures == 0


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


class _Context:
    def __init__(
        self,
        seconds: float,
        connections: int,
        placement: procs.Placement,
        postgres: pg.Postgres,
        workdir: Path,
        run_id: str,
    ) -> None:
        self.seconds = seconds
        self.connections = connections
        self.placement = placement
        self.postgres = postgres
        self.workdir = workdir
        self.run_id = run_id
        self._databases = 0

    def _dsn(self) -> str:
        self._databases += 1
        return self.postgres.create_database(f"bench_scale_{self.run_id}_{self._databases}")

    def _wabahook(
        self, settings: dict[str, str] | None = None, workers: int = 1, pin: bool = True
    ) -> Any:
        dsn = self._dsn()
        n = self._databases
        return servers.wabahook(
            database_url=dsn,
            data_dir=self.workdir / f"data{n}",
            cpus=self.placement.server if pin else None,
            log=self.workdir / f"wabahook{n}.log",
            workers=workers,
            settings=settings,
        )

    def _measure(
        self,
        server: procs.Server,
        contest: Contest,
        size: int,
        label: str,
        rate: float = 0.0,
        connections: int | None = None,
    ) -> Point:
        point = measure(
            server,
            contest,
            [cloud_text(size)],
            label=label,
            seconds=self.seconds,
            connections=connections or self.connections,
            placement=self.placement,
            postgres=self.postgres,
            rate=rate,
        )
        r = point.result
        print(f"  .. {contest.name:<22} {label:<22} {r.rps:>9,.0f} req/s  p99 {r.p99_ms:.1f} ms")
        return point

    def sizes(self, sizes: Sequence[int]) -> list[dict[str, Any]]:
        print("\nbody size: bare ASGI and wabahook, one Cloud text body of each size")
        measured: dict[str, dict[int, Point]] = {"bare": {}, "wabahook": {}}
        for name in ("bare", "wabahook"):
            contest = Contest(name)
            start = (
                servers.bare(cpus=self.placement.server, log=self.workdir / "bare.log")
                if name == "bare"
                else self._wabahook()
            )
            with start as server:
                warm_up(server, contest, [cloud_text(1024)], self.placement)
                for size in sizes:
                    conns = self.connections if size <= LARGE_BODY else min(self.connections, 16)
                    measured[name][size] = self._measure(
                        server, contest, size, f"{_size(size)}, {conns} conns", connections=conns
                    )
        rows, out = [], []
        for size in sizes:
            b, w = measured["bare"][size].result, measured["wabahook"][size].result
            rows.append(
                [
                    _size(size),
                    round(b.rps),
                    round(w.rps),
                    f"{w.rps / b.rps:.2f}x",
                    w.p50_ms,
                    w.p99_ms,
                    w.max_ms,
                    f"{w.rps * size / 2**20:.1f}",
                    w.failures,
                ]
            )
            out.append(
                {
                    "size": size,
                    "bare_rps": b.rps,
                    "wabahook_rps": w.rps,
                    "p50_ms": w.p50_ms,
                    "p99_ms": w.p99_ms,
                    "max_ms": w.max_ms,
                    "failures": w.failures + b.failures,
                }
            )
        print(
            report.table(
                [
                    "body",
                    "bare req/s",
                    "wabahook req/s",
                    "ratio",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "MiB/s stored",
                    "failures",
                ],
                rows,
            )
        )
        return out

    def setting(
        self, name: str, values: Sequence[float | int], connections: int
    ) -> list[dict[str, Any]]:
        default = getattr(Config(), name)
        env = f"WABAHOOK_{name.upper()}"
        print(
            f"\n{env}: maximum throughput ({connections} connections), then paced at "
            f"half the default's maximum; default {default}"
        )
        order = [default, *[v for v in values if v != default]]
        points: dict[float | int, tuple[Point, Point]] = {}
        paced_rate = 0.0
        for value in order:
            contest = Contest(f"{env}={value}")
            with self._wabahook({name: str(value)}) as server:
                warm_up(server, contest, [cloud_text(1024)], self.placement)
                top = self._measure(server, contest, 1024, "max", connections=connections)
                paced_rate = paced_rate or top.result.rps / 2
                paced = self._measure(
                    server,
                    contest,
                    1024,
                    f"{paced_rate:,.0f}/s paced",
                    rate=paced_rate,
                    connections=connections,
                )
            points[value] = (top, paced)
        base = points[default][0].result.rps
        rows, out = [], []
        for value in sorted(points):
            best, slow = (p.result for p in points[value])
            mark = " (default)" if value == default else ""
            rows.append(
                [
                    f"{value}{mark}",
                    round(best.rps),
                    f"{best.rps / base:.2f}x",
                    best.p99_ms,
                    best.max_ms,
                    slow.p50_ms,
                    slow.p99_ms,
                    slow.max_ms,
                    best.failures + slow.failures,
                ]
            )
            out.append(
                {
                    name: value,
                    "rps": best.rps,
                    "p99_ms": best.p99_ms,
                    "max_ms": best.max_ms,
                    "paced_rps": slow.rps,
                    "paced_p50_ms": slow.p50_ms,
                    "paced_p99_ms": slow.p99_ms,
                    "failures": best.failures + slow.failures,
                }
            )
        print(
            report.table(
                [
                    env,
                    "max req/s",
                    "vs default",
                    "p99 ms",
                    "max ms",
                    f"p50 @{paced_rate:,.0f}/s",
                    "p99 paced",
                    "max paced",
                    "failures",
                ],
                rows,
            )
        )
        return out

    def workers(self) -> list[dict[str, Any]]:
        print(
            "\nworkers: 1 vs 2 uvicorn workers (unpinned, they share both CPUs with wrk "
            "and PostgreSQL)"
        )
        variants = [
            ("1 worker, server CPU", 1, True),
            ("2 workers, server CPU", 2, True),
            ("1 worker, any CPU", 1, False),
            ("2 workers, any CPU", 2, False),
        ]
        headers = ["workers", "req/s", "vs first", "p50 ms", "p99 ms", "max ms", "RSS MiB"]
        rows: list[list[Any]] = []
        out: list[dict[str, Any]] = []
        base = 0.0
        for label, workers, pin in variants:
            contest = Contest(label)
            try:
                with self._wabahook(workers=workers, pin=pin) as server:
                    warm_up(server, contest, [cloud_text(1024)], self.placement)
                    point = self._measure(server, contest, 1024, f"{self.connections} conns")
            except RuntimeError as exc:
                # A variant that does not start is reported, and fails the command.
                print(f"  !! {label}: {exc}")
                rows.append([label, "did not start", "-", "-", "-", "-", "-"])
                out.append({"variant": label, "error": str(exc), "failures": 1})
                continue
            r, rss = point.result, point.server_usage.peak_rss
            base = base or r.rps
            rows.append(
                [
                    label,
                    round(r.rps),
                    f"{r.rps / base:.2f}x",
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    report.mib(rss),
                ]
            )
            out.append(
                {
                    "variant": label,
                    "rps": r.rps,
                    "p99_ms": r.p99_ms,
                    "max_ms": r.max_ms,
                    "peak_rss": rss,
                    "failures": r.failures,
                }
            )
        print(report.table(headers, rows))
        return out

    def copy_rate(self) -> list[dict[str, Any]]:
        """PostgreSQL's side alone: the app's COPY + dedup insert + COMMIT, no HTTP in front."""
        print(
            f"\nPostgreSQL ingest: app.storage.write_batch of 1 KiB Cloud bodies, "
            f"{COPY_FLUSHERS} batches in flight, from this process on the server CPU"
        )
        template = cloud_text(1024)
        run_key = secrets.token_hex(3)
        rows: list[list[Any]] = []
        out: list[dict[str, Any]] = []
        mine = os.sched_getaffinity(0)
        if self.placement.server is not None:
            os.sched_setaffinity(0, self.placement.server)
        try:
            for n, batch in enumerate(COPY_BATCHES):
                keys = (f"{run_key}{n:02x}{i:012x}" for i in range(COPY_REQUESTS))
                requests = [incoming(template.render([k]), template.channel) for k in keys]
                dsn = self._dsn()
                with procs.Sampler(self.postgres.pids()) as pg_usage:
                    began = time.monotonic()
                    written = asyncio.run(_copy_run(dsn, requests, batch, self.seconds))
                    elapsed = time.monotonic() - began
                pg_cpu = pg_usage.usage.cpu_seconds / elapsed
                rate = written / elapsed
                # One event per body: events/s = requests/s.
                print(f"  .. batch {batch:<6} {rate:>9,.0f} events/s  PostgreSQL CPU {pg_cpu:.0%}")
                per_core = f"{rate / pg_cpu:,.0f}" if self.postgres.embedded and pg_cpu else "-"
                rows.append([batch, round(rate), f"{pg_cpu:.0%}", per_core])
                out.append({"batch": batch, "events_per_s": rate, "postgres_cpu": pg_cpu})
        finally:
            os.sched_setaffinity(0, mine)
        print(report.table(["requests/batch", "events/s", "PG CPU", "events/s per PG core"], rows))
        return out


COPY_BATCHES = (100, 1000, 4000)  # requests per write_batch call
COPY_FLUSHERS = 2  # concurrent batches, as the default flush_slots
COPY_REQUESTS = 150_000  # built before timing, so building them is not what is measured


async def _copy_run(dsn: str, requests: list[IncomingRequest], batch: int, seconds: float) -> int:
    """Write `requests` with the app's own batch write until done or out of time; count them."""
    pool = await storage.create_pool(dsn, COPY_FLUSHERS, COPY_FLUSHERS + 1)
    try:
        async with pool.acquire() as connection:
            await storage.migrate(connection)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        chunks = iter(range(0, len(requests), batch))
        written = 0

        async def flusher() -> None:
            nonlocal written
            for start in chunks:
                if loop.time() > deadline:
                    return
                await storage.write_batch(pool, requests[start : start + batch])
                written += len(requests[start : start + batch])

        await asyncio.gather(*(flusher() for _ in range(COPY_FLUSHERS)))
        return written
    finally:
        await pool.close()


def _size(size: int) -> str:
    if size >= 2**20 or size == 3_000_000:
        return f"{size / 2**20:.1f} MiB" if size % 2**20 else f"{size // 2**20} MiB"
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"
