"""Drive a server with wrk: the bodies of `bench.bodies` templates, a fresh key per request.

The generated Lua script keeps each template's HTTP request cut at its key holes and joins the
pieces with a key made of (run, wrk thread, hole, per-thread counter): no JSON work per
request, so one wrk thread on one core outruns every server measured here (the bare ASGI
app's figure in the same run shows how far). With `rate`, a `delay()` hook spaces each
thread's requests on a schedule, for latency at a fixed request rate.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import procs
from bench.bodies import Template
from tests.support.environment import scrubbed_environment
from tests.support.processes import start_group, stop_group

_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } wbench_timespec;
int clock_gettime(int clk_id, wbench_timespec *tp);
]]
local clock = ffi.new("wbench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local run = "@RUN@"
local interval = @INTERVAL@  -- ms between requests of one thread; 0: as fast as possible
local templates = {
@TEMPLATES@
}
local ntemplates = #templates
local counter = 0
local next_slot = 0
local nthreads = 0
tid = 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

function request()
  local t = templates[counter % ntemplates + 1]
  local parts = {t.chunks[1]}
  for i = 1, #t.slots do
    parts[2 * i] = string.format("%s%02x%x%012x", run, tid, t.slots[i], counter)
    parts[2 * i + 1] = t.chunks[i + 1]
  end
  counter = counter + 1
  return table.concat(parts)
end

if interval > 0 then
  -- Called once per response: reserve the thread's next slot; a late thread does not burst.
  function delay()
    local now = now_ms()
    if next_slot < now then next_slot = now end
    local wait = next_slot - now
    next_slot = next_slot + interval
    return wait
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def lua_string(data: bytes) -> str:
    """A Lua string literal holding exactly these bytes."""
    out = ['"']
    for byte in data:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    out.append('"')
    return "".join(out)


def request_head(path: str, port: int, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def lua_script(templates: Sequence[Template], port: int, run: str, interval_ms: float) -> str:
    entries = []
    for template in templates:
        head = request_head(f"/webhook/{template.channel}", port, template.size)
        chunks = [head + template.chunks[0], *template.chunks[1:]]
        entries.append(
            "  {chunks = {"
            + ", ".join(lua_string(c) for c in chunks)
            + "}, slots = {"
            + ", ".join(map(str, template.slots))
            + "}},"
        )
    return (
        _LUA.replace("@RUN@", run)
        .replace("@INTERVAL@", repr(float(interval_ms)))
        .replace("@TEMPLATES@", "\n".join(entries))
    )


@dataclass(frozen=True)
class WrkResult:
    requests: int  # responses received
    non_2xx: int
    socket_errors: int  # connect, read, write and timeout errors
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    client_cpu: float  # wrk's CPU seconds per second of run: near 1.0 means wrk was the limit

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def failures(self) -> int:
        return self.non_2xx + self.socket_errors


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")


def run(
    port: int,
    templates: Sequence[Template],
    *,
    seconds: float,
    connections: int,
    cpus: frozenset[int] | None,
    rate: float = 0.0,
    threads: int = 1,
    timeout_s: int = 10,
) -> WrkResult:
    """One wrk run against 127.0.0.1:port; `rate` > 0 paces it to that many requests/s."""
    require_wrk()
    threads = min(threads, connections)
    interval = threads * 1000.0 / rate if rate > 0 else 0.0
    run_id = secrets.token_hex(3)[:5]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua_script(templates, port, run_id, interval))
    try:
        argv = procs.pin_argv(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                f"--timeout={timeout_s}s",
                "-s",
                script.name,
                f"http://127.0.0.1:{port}/",
            ],
            cpus,
        )
        proc = start_group(argv, env=scrubbed_environment(), stdout=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            output = proc.stdout.read().decode(errors="replace")
            # wait4 gives the child's own CPU time (Popen.wait would reap it without).
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if proc.returncode is None:
                stop_group(proc, procs.STOP_TIMEOUT)
    finally:
        os.unlink(script.name)
    line = next((x for x in output.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{output[-2000:]}")
    return result_of(json.loads(line[len("WRKJSON ") :]), usage.ru_utime + usage.ru_stime)


def result_of(data: dict[str, Any], client_cpu_s: float) -> WrkResult:
    """A run's figures from the JSON the Lua script prints after `WRKJSON`."""
    elapsed = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"],
        non_2xx=data["status"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        seconds=elapsed,
        p50_ms=data["p50"] / 1000,
        p90_ms=data["p90"] / 1000,
        p99_ms=data["p99"] / 1000,
        p999_ms=data["p999"] / 1000,
        max_ms=data["max"] / 1000,
        client_cpu=client_cpu_s / elapsed if elapsed else 0.0,
    )
