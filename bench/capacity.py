"""`capacity`: the highest Poisson rate a receiver holds with p99 under 100 ms and no errors.

wabahook and the typical receiver (and, on request, the bare ASGI ceiling) each get the same
open-loop stream: wrk sends `compare`'s bodies at Poisson arrival times, one schedule per wrk
thread, whatever the answers do. Each free connection takes the next arrival; a slow answer
holds its connection but delays no other send. The offered rate doubles from `start` while
the server holds it, then the search bisects between the highest rate held and the lowest
missed, each step a short bounded run against the same server process.

wrk's latency runs from each send, which is the latency from the arrival only while the sends
keep their schedule, so the script also records how late each send left, and why:

- an arrival that found no connection free waited for the server, which then held one
  request per connection. A step holds only if at most 0.1% of arrivals waited over 10 ms,
  so the p99 from the arrival is within about 10 ms of wrk's;
- a send whose wrk timer fired late waited for the client. Over 1% of sends 10 ms late that
  way means wrk could not offer the rate: the step says so and the search stops there, the
  capacity reported as a lower bound, not as the server's.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import select
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import charts, compare, pg, procs, report, servers, wrk
from bench.bodies import Template
from tests.support.environment import scrubbed_environment
from tests.support.processes import start_group, stop_group

P99_LIMIT_MS = 100.0  # the capacity is the highest rate with p99 under this and no errors
BUDGET_MS = 5000.0  # 360dialog's budget for a 200, drawn on the chart
MEDIAN_TARGET_MS = 250.0  # the median target, drawn on the chart
LATE_MS = 10.0  # a send this far behind its arrival time is late
# A step holds only if at most this share of arrivals waited that long for a free connection:
# then the p99 from the arrival is within about LATE_MS of wrk's p99 from the send.
LATE_SHARE = 0.001
# More sends than this share late because wrk's own timers ran late: wrk fell behind.
CLIENT_LATE_SHARE = 0.01
CLIENT_CPU_LIMIT = 0.9  # wrk at this share of its core or more cannot vouch for a miss
LATENESS_EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
WARMUP_S = 2.0  # seconds at the start rate before the first step, not measured
PAUSE_S = 2.0  # between steps: what an overloaded step left queued drains first
WRK_TIMEOUT_S = 10  # wrk counts an answer slower than this as a timeout (an error)
MIN_CONNECTIONS = 16
MAX_CONNECTIONS = 4000

HELD, MISSED, CLIENT = "held", "missed", "client"

# Appended to bench.wrk's script: `setup`, `request` and `done` are replaced or wrapped, and
# `delay` spaces the sends on a Poisson schedule shared by the thread's connections.
_POISSON_LUA = r"""
local mean_gap_ms = @GAP@
local late_ms = @LATE@
local edges = {@EDGES@}
local threads = {}
arrival = -1  -- arrival time (ms) of the last slot handed out to a connection
sent = 0  -- requests written
late = 0  -- sends more than late_ms after their arrival
late_client = 0  -- ... of them, held up by this client (its timers ran late), not the server
late_max = 0
lateness = {}
for i = 1, #edges + 1 do lateness[i] = 0 end
-- Slots handed out but not yet sent, in order: their arrival and when the send was due (the
-- arrival, or when a connection came free after it).
local due_arrival, due_send = {}, {}
local due_head, due_tail = 1, 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
  table.insert(threads, thread)
end

-- Called whenever a connection is free: it takes the next arrival, however late that is.
function delay()
  local now = now_ms()
  if arrival < 0 then arrival = now end
  arrival = arrival - math.log(1 - math.random()) * mean_gap_ms
  due_tail = due_tail + 1
  due_arrival[due_tail] = arrival
  local wait = arrival - now
  if wait < 0 then
    due_send[due_tail] = now  -- no connection was free at the arrival
    return 0
  end
  due_send[due_tail] = arrival
  return wait
end

local build_request = request
function request()
  local now = now_ms()
  if due_head <= due_tail then
    local behind = now - due_arrival[due_head]
    if behind < 0 then behind = 0 end
    local i = 1
    while i <= #edges and behind > edges[i] do i = i + 1 end
    lateness[i] = lateness[i] + 1
    if behind > late_ms then late = late + 1 end
    if now - due_send[due_head] > late_ms then late_client = late_client + 1 end
    if behind > late_max then late_max = behind end
    due_arrival[due_head], due_send[due_head] = nil, nil
    due_head = due_head + 1
  end
  sent = sent + 1
  return build_request()
end

local summary_done = done
function done(summary, latency, requests)
  summary_done(summary, latency, requests)
  local now = now_ms()
  local s, l, lc, lmax, behind = 0, 0, 0, 0, 0
  local hist = {}
  for i = 1, #edges + 1 do hist[i] = 0 end
  for _, t in ipairs(threads) do
    s = s + t:get("sent")
    l = l + t:get("late")
    lc = lc + t:get("late_client")
    lmax = math.max(lmax, t:get("late_max"))
    local h = t:get("lateness")
    for i = 1, #edges + 1 do hist[i] = hist[i] + h[i] end
    -- Past the last arrival a connection took: arrivals no connection came free for.
    if t:get("arrival") >= 0 then behind = math.max(behind, now - t:get("arrival")) end
  end
  io.write(string.format(
    'WRKSCHED {"sent":%d,"late":%d,"late_client":%d,"late_max_ms":%f,"behind_ms":%f,' ..
    '"lateness":[%s]}\n', s, l, lc, lmax, behind, table.concat(hist, ",")))
end
"""


def poisson_script(
    templates: Sequence[Template], port: int, run: str, rate: float, threads: int
) -> str:
    """bench.wrk's request script, its sends spaced at Poisson arrivals of `rate`/s in all."""
    return wrk.lua_script(templates, port, run, 0.0) + (
        _POISSON_LUA.replace("@GAP@", repr(threads * 1000.0 / rate))
        .replace("@LATE@", repr(LATE_MS))
        .replace("@EDGES@", ", ".join(map(str, LATENESS_EDGES_MS)))
    )


@dataclass(frozen=True)
class Schedule:
    """How well wrk kept the Poisson schedule of one run."""

    sent: int
    late: int  # sends more than LATE_MS behind their arrival
    late_client: int  # ... of them, held up by the client itself (its timers ran late)
    late_max_ms: float
    behind_ms: float  # how long before the end the last arrival a connection took was due
    lateness: tuple[int, ...]  # sends per bucket of LATENESS_EDGES_MS, then over the last

    def unsent(self, rate: float) -> int:
        """Arrivals more than LATE_MS overdue when the run ended that no connection came free
        for (estimated from the rate)."""
        return max(0, math.floor((self.behind_ms - LATE_MS) * rate / 1000))

    def late_p99_ms(self) -> float:
        """Upper edge of the lateness bucket holding the 99th percentile send."""
        total, seen = sum(self.lateness), 0
        for edge, count in zip((*LATENESS_EDGES_MS, math.inf), self.lateness, strict=True):
            seen += count
            if total and seen >= 0.99 * total:
                return float(edge)
        return 0.0


@dataclass
class Step:
    """One bounded run at one offered rate."""

    server: str
    rate: float
    connections: int
    result: wrk.WrkResult
    schedule: Schedule
    server_usage: procs.Usage
    postgres_usage: procs.Usage | None
    load: float = 0.0  # 1-minute load average when the step started
    outcome: str = ""
    reason: str = ""

    @property
    def server_cpu(self) -> float:
        """Share of one core the server's processes used."""
        return self.server_usage.cpu_seconds / self.result.seconds if self.result.seconds else 0.0

    @property
    def per_core(self) -> float:
        """Webhooks answered 200 per CPU-second of the server's processes."""
        cpu = self.server_usage.cpu_seconds
        return self.result.ok / cpu if cpu else 0.0

    def row(self) -> list[Any]:
        r, s = self.result, self.schedule
        pg_cpu = (
            f"{self.postgres_usage.cpu_seconds / r.seconds:.0%}"
            if self.postgres_usage and r.seconds
            else "-"
        )
        unsent = s.unsent(self.rate)
        late = (s.late + unsent) / max(1, s.sent + unsent)
        return [
            self.server,
            f"{self.rate:,.0f}",
            self.connections,
            round(r.rps),
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            f"{self.server_cpu:.0%}",
            pg_cpu,
            f"{r.client_cpu:.0%}",
            f"{late:.2%}",
            r.failures,
            self.outcome,
        ]

    def record(self) -> dict[str, Any]:
        r = self.result
        return {
            "rate": self.rate,
            "connections": self.connections,
            "outcome": self.outcome,
            "reason": self.reason,
            **r.__dict__,
            "ok": r.ok,
            "rps": r.rps,
            "failures": r.failures,
            "schedule": {**self.schedule.__dict__, "late_p99_ms": self.schedule.late_p99_ms()},
            "server_cpu_s": self.server_usage.cpu_seconds,
            "postgres_cpu_s": self.postgres_usage.cpu_seconds if self.postgres_usage else None,
            "peak_rss": self.server_usage.peak_rss,
            "load": self.load,
        }


HEADERS = [
    "server",
    "offered/s",
    "conns",
    "req/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "srv CPU",
    "PG CPU",
    "wrk CPU",
    "late",
    "errors",
    "outcome",
]


def judge(step: Step) -> tuple[str, str]:
    """(HELD, MISSED or CLIENT, why) for one step."""
    r, s = step.result, step.schedule
    expected = max(1.0, step.rate * r.seconds)
    # Late with no connection free: the server held them all, as many requests in flight as
    # connections. Late with a connection free: wrk's own timers ran late.
    busy_late = s.late - s.late_client + s.unsent(step.rate)
    why = []
    if r.failures:
        why.append(f"{r.failures:,} errors")
    if busy_late > LATE_SHARE * expected:
        why.append(f"no connection free: {busy_late:,} arrivals over {LATE_MS:g} ms late")
    elif s.late_client > CLIENT_LATE_SHARE * expected:
        return CLIENT, (
            f"wrk fell behind its schedule: {s.late_client:,} sends left over {LATE_MS:g} ms "
            f"after they were due (wrk at {r.client_cpu:.0%} of its core)"
        )
    if r.p99_ms >= P99_LIMIT_MS:
        why.append(f"p99 {r.p99_ms:.1f} ms")
    if not why:
        return HELD, f"p99 {r.p99_ms:.1f} ms"
    if r.client_cpu >= CLIENT_CPU_LIMIT:
        # A client short of CPU reads answers late: the miss may be its own.
        return CLIENT, f"{', '.join(why)}, with wrk at {r.client_cpu:.0%} of its core"
    return MISSED, ", ".join(why)


@dataclass
class Search:
    """The steps of one server's search and what they found."""

    server: str
    steps: list[Step] = field(default_factory=list)
    held: float | None = None  # highest rate held
    missed: float | None = None  # lowest rate missed
    limited: float | None = None  # a rate the client could not offer (the search stopped)
    ceiling: bool = False  # held up to --max-rate

    @property
    def capacity_step(self) -> Step | None:
        return next((s for s in self.steps if s.outcome == HELD and s.rate == self.held), None)

    def describe(self) -> str:
        if self.held is None:
            found = "none held"
            if self.steps:
                found += f" (lowest tried {min(s.rate for s in self.steps):,.0f}/s)"
        else:
            found = f"{self.held:,.0f}/s"
        if self.limited is not None:
            bound = f"at least {found}" if self.held is not None else found
            return f"{bound}: the load generator could not offer {self.limited:,.0f}/s"
        if self.ceiling:
            return f"at least {found}: held up to --max-rate"
        if self.missed is not None and self.held is not None:
            return f"{found} (missed at {self.missed:,.0f}/s)"
        return found

    def record(self) -> dict[str, Any]:
        best = self.capacity_step
        return {
            "name": self.server,
            "capacity": self.held,
            "missed": self.missed,
            "limited": self.limited,
            "ceiling": self.ceiling,
            "summary": self.describe(),
            "server_cpu": best.server_cpu if best else None,
            "per_core": best.per_core if best else None,
            "steps": [s.record() for s in self.steps],
        }


def search(
    server: str,
    measure: Callable[[float], Step],
    *,
    start: float,
    max_rate: float,
    precision: float,
    max_steps: int,
    on_step: Callable[[Step], None] | None = None,
) -> Search:
    """Double the rate from `start` while it holds, then bisect between the highest rate held
    and the lowest missed until they are within `precision` of each other. A first step that
    misses halves the rate instead. A step the client could not offer ends the search."""
    found = Search(server)
    rate = start
    while len(found.steps) < max_steps:
        step = measure(rate)
        step.outcome, step.reason = judge(step)
        found.steps.append(step)
        if on_step is not None:
            on_step(step)
        if step.outcome == CLIENT:
            found.limited = rate
            break
        if step.outcome == HELD:
            found.held = max(rate, found.held or 0.0)
        else:
            found.missed = min(rate, found.missed or math.inf)
        if found.missed is None:
            if rate >= max_rate:
                found.ceiling = True
                break
            rate = min(2 * rate, max_rate)
        elif found.held is None:
            if rate <= 1:
                break
            rate = float(max(1, round(rate / 2)))
        else:
            if found.missed <= found.held * (1 + precision):
                break
            rate = float(round((found.held + found.missed) / 2))
            if rate in (found.held, found.missed):
                break
    return found


def connections_for(rate: float, per_connection: float) -> int:
    """One connection per `per_connection` requests/s offered, as budget's locust users."""
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, math.ceil(rate / per_connection)))


def offer(
    port: int,
    templates: Sequence[Template],
    *,
    rate: float,
    seconds: float,
    connections: int,
    cpus: frozenset[int] | None,
) -> tuple[wrk.WrkResult, Schedule]:
    """One wrk run at Poisson arrivals of `rate`/s against 127.0.0.1:port, bounded in time."""
    wrk.require_wrk()
    run_id = secrets.token_hex(3)[:5]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(poisson_script(templates, port, run_id, rate, threads=1))
    script = Path(file.name)
    argv = procs.pin_argv(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={WRK_TIMEOUT_S}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/",
        ],
        cpus,
    )
    try:
        proc = start_group(argv, env=scrubbed_environment(), stdout=subprocess.PIPE)
        try:
            output, usage = _collect(proc, deadline=time.monotonic() + seconds + 60)
        finally:
            if proc.returncode is None:
                stop_group(proc, procs.STOP_TIMEOUT)
    finally:
        script.unlink(missing_ok=True)
    lines = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in output.splitlines() if " " in line
    }
    if proc.returncode != 0 or "WRKJSON" not in lines or "WRKSCHED" not in lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{output[-2000:]}")
    data, sched = json.loads(lines["WRKJSON"]), json.loads(lines["WRKSCHED"])
    result = wrk.result_of(data, usage.ru_utime + usage.ru_stime if usage else 0.0)
    schedule = Schedule(
        sent=sched["sent"],
        late=sched["late"],
        late_client=sched["late_client"],
        late_max_ms=sched["late_max_ms"],
        behind_ms=sched["behind_ms"],
        lateness=tuple(sched["lateness"]),
    )
    return result, schedule


def _collect(proc: subprocess.Popen[bytes], deadline: float) -> tuple[str, Any]:
    """wrk's output and its resource usage (its own CPU time), or as much as came before the
    deadline; the process is reaped here when it exits in time."""
    assert proc.stdout is not None
    fd, chunks = proc.stdout.fileno(), []
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    usage = None
    while time.monotonic() < deadline:
        # wait4, not Popen.wait: it gives the child's own CPU time.
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        usage = None
        time.sleep(0.05)
    proc.stdout.close()
    return b"".join(chunks).decode(errors="replace"), usage


def _starter(
    name: str,
    dsn: str | None,
    placement: procs.Placement,
    workdir: Path,
    settings: dict[str, str],
) -> AbstractContextManager[procs.Server]:
    if name == "wabahook":
        assert dsn is not None
        return servers.wabahook(
            database_url=dsn,
            data_dir=workdir / "data",
            cpus=placement.server,
            log=workdir / "wabahook.log",
            settings=settings,
        )
    if name == "typical":
        assert dsn is not None
        return servers.typical(database_url=dsn, cpus=placement.server, log=workdir / "typical.log")
    return servers.bare(cpus=placement.server, log=workdir / "bare.log")


TABLES = {"wabahook": "wabahook_events", "typical": "webhook_events"}  # one row per event
SERVERS = ("wabahook", "typical", "bare")


def run(
    *,
    names: Sequence[str],
    seconds: float,
    start: float,
    max_rate: float,
    precision: float,
    max_steps: int,
    per_connection: float,
    body: str,
    database_url: str | None,
    pg_cpu: str,
    settings: dict[str, str],
) -> bool:
    """Search each server's capacity; prints everything and returns whether every 200 was
    stored (the capacities themselves are figures, not checks)."""
    wrk.require_wrk()
    placement = procs.Placement.plan(pg_cpu)
    templates = compare.stream(body)
    run_id = secrets.token_hex(3)
    workdir = report.RESULTS_DIR / f"capacity-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
    workdir.mkdir(parents=True)
    print(
        f"== capacity: the highest Poisson rate with p99 < {P99_LIMIT_MS:g} ms and no errors, "
        f"{', '.join(names)}; {seconds:g} s per step, body stream {body} =="
    )
    searches: list[Search] = []
    verdict = report.Verdict()
    with pg.Postgres(database_url, placement.postgres) as postgres:
        report.print_environment(
            {
                "placement": placement.describe(),
                "database": postgres.describe(),
                "client": f"wrk, 1 thread, open loop: Poisson arrivals on one schedule, one "
                f"connection per {per_connection:g} requests/s offered "
                f"({MIN_CONNECTIONS}-{MAX_CONNECTIONS})",
                "search": f"from {start:g}/s, doubling up to {max_rate:g}/s, then bisecting "
                f"to {precision:.0%}; at most {max_steps} steps per server",
                "logs": str(workdir),
            }
        )
        for name in names:
            dsn = (
                postgres.create_database(f"bench_capacity_{name}_{run_id}")
                if name in TABLES
                else None
            )
            found, ok_total, slack = _search_server(
                name,
                dsn,
                postgres,
                templates,
                placement,
                workdir,
                settings,
                seconds=seconds,
                start=start,
                max_rate=max_rate,
                precision=precision,
                max_steps=max_steps,
                per_connection=per_connection,
            )
            searches.append(found)
            if dsn is not None:
                # Counted after the server stopped; runs that end with requests in flight, or
                # answers wrk gave up on, may have stored up to that many more.
                extra = compare.count_rows(dsn, TABLES[name]) - ok_total
                verdict.check(
                    f"{name}: nothing acknowledged is missing",
                    0 <= extra <= slack,
                    f"{extra:+,} rows against {ok_total:,} 200s",
                )
    return _print(searches, verdict, workdir, body, seconds, placement)


def _search_server(
    name: str,
    dsn: str | None,
    postgres: pg.Postgres,
    templates: Sequence[Template],
    placement: procs.Placement,
    workdir: Path,
    settings: dict[str, str],
    *,
    seconds: float,
    start: float,
    max_rate: float,
    precision: float,
    max_steps: int,
    per_connection: float,
) -> tuple[Search, int, int]:
    """(the search, 200s over every run, rows that may be stored beyond them)."""
    totals = {"ok": 0, "slack": 0}
    print(f"\n{name}")
    with _starter(name, dsn, placement, workdir, settings) as server:
        warm, _ = offer(
            server.port,
            templates,
            rate=start,
            seconds=WARMUP_S,
            connections=connections_for(start, per_connection),
            cpus=placement.client,
        )
        totals["ok"] += warm.ok
        totals["slack"] += connections_for(start, per_connection) + warm.socket_errors

        def measure(rate: float) -> Step:
            time.sleep(PAUSE_S)
            if dsn is not None:
                postgres.checkpoint()
            connections = connections_for(rate, per_connection)
            load = os.getloadavg()[0]
            with (
                procs.Sampler([server.proc.pid]) as server_usage,
                procs.Sampler(postgres.pids() if dsn else []) as pg_usage,
            ):
                result, schedule = offer(
                    server.port,
                    templates,
                    rate=rate,
                    seconds=seconds,
                    connections=connections,
                    cpus=placement.client,
                )
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited during the run; see {server.log}")
            totals["ok"] += result.ok
            totals["slack"] += connections + result.socket_errors
            return Step(
                name,
                rate,
                connections,
                result,
                schedule,
                server_usage.usage,
                pg_usage.usage if dsn and postgres.embedded else None,
                load,
            )

        found = search(
            name,
            measure,
            start=start,
            max_rate=max_rate,
            precision=precision,
            max_steps=max_steps,
            on_step=_progress,
        )
    return found, totals["ok"], totals["slack"]


def _progress(step: Step) -> None:
    r = step.result
    print(
        f"  .. {step.rate:>9,.0f}/s  {step.outcome:<6}  p50 {r.p50_ms:7.1f} ms  "
        f"p99 {r.p99_ms:7.1f} ms  server CPU {step.server_cpu:4.0%}  load {step.load:.2f}  "
        f"({step.reason})"
    )


def ratio(first: Search, second: Search) -> tuple[float | None, str]:
    """first/second capacity, and "", "at least " or "at most " when one is only a bound."""
    if not first.held or not second.held:
        return None, ""
    low_first = first.limited is not None or first.ceiling
    low_second = second.limited is not None or second.ceiling
    if low_first and low_second:
        return first.held / second.held, "unknown, both bounds: "
    qualifier = "at least " if low_first else "at most " if low_second else ""
    return first.held / second.held, qualifier


def _print(
    searches: Sequence[Search],
    verdict: report.Verdict,
    workdir: Path,
    body: str,
    seconds: float,
    placement: procs.Placement,
) -> bool:
    print(
        "\nsteps (latency from wrk, from each send; CPU as share of one core; late: sends over "
        f"{LATE_MS:g} ms behind their arrival)"
    )
    print(report.table(HEADERS, [step.row() for s in searches for step in s.steps]))
    print(f"\ncapacity (p99 < {P99_LIMIT_MS:g} ms, no errors, sends on schedule)")
    for found in searches:
        print(f"  {found.server:<9} {found.describe()}")
        best = found.capacity_step
        if best is not None:
            pg_part = ""
            if best.postgres_usage is not None:
                pg_us = best.postgres_usage.cpu_seconds / max(1, best.result.ok) * 1e6
                pg_part = f"; PostgreSQL {pg_us:.0f} µs of CPU per webhook"
            print(
                f"  {'':<9} at {best.rate:,.0f}/s: {best.result.rps:,.0f} webhooks/s answered, "
                f"server at {best.server_cpu:.0%} of one core: {best.per_core:,.0f} webhooks/s "
                f"per server core{pg_part}"
            )
        if found.limited is not None:
            step = found.steps[-1]
            print(f"  {'':<9} not a capacity of the server: {step.reason}")
    by_name = {s.server: s for s in searches}
    summary: dict[str, Any] = {}
    if "wabahook" in by_name and "typical" in by_name:
        value, qualifier = ratio(by_name["wabahook"], by_name["typical"])
        if value is None:
            print("  wabahook/typical: no ratio (a server held no rate)")
        else:
            print(f"  wabahook/typical: {qualifier}{value:.2f}x")
        summary = {"ratio_wabahook_typical": value, "ratio_qualifier": qualifier.strip()}
    print("\ncorrectness")
    verdict.print()
    data = {
        "body": body,
        "seconds": seconds,
        "placement": placement.describe(),
        "p99_limit_ms": P99_LIMIT_MS,
        "budget_ms": BUDGET_MS,
        "median_target_ms": MEDIAN_TARGET_MS,
        "workdir": str(workdir),
        **summary,
        "correct": verdict.passed,
        "servers": [s.record() for s in searches],
    }
    path = report.save("capacity", data)
    print(f"  figures saved to {path}; server logs in {workdir}")
    charts.save_latency_vs_rate(json.loads(path.read_text()), [workdir, charts.DOCS_DIR])
    return verdict.passed
