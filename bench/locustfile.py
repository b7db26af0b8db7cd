"""360dialog's traffic mix at a fixed rate, for `python -m bench budget` and `soak`.

Run by the bench runner, or by hand against a server of your own (127.0.0.1 only):

    locust -f bench/locustfile.py --headless -u 20 -r 20 -t 60s -H http://127.0.0.1:8000

Each user posts BENCH_USER_RPS requests/s on average, with exponential gaps between sends
(Poisson arrivals, like webhooks of independent conversations), so users x that rate is the
offered load. Plain `constant_throughput` is the wrong model against a group-commit server: the
users acknowledged by one COMMIT all wait the same remaining period and fire together again,
so the load locks into bursts that 360dialog's traffic does not have.

Settings come from the environment:

    BENCH_RUN        6 hex digits inside every message id (default: random), so reruns against
                     one database send fresh ids
    BENCH_SEED       seed of the body stream (default 1)
    BENCH_USER_RPS   requests/s per user (default 10)
    BENCH_LOG        file to append "stream index status latency_ms" to, one line per request,
                     from which the runner counts what was acknowledged
    BENCH_LARGE_RPS  3 MB bodies/s sent by extra users beside the mix (default 0: none)
    BENCH_LARGE_SIZE size of those bodies in bytes (default 3000000)
"""

from __future__ import annotations

import math
import os
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from locust import FastHttpUser, events, task

# locust imports this file by path; make `bench` importable when run from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bodies import LargeStream, Mix

RUN = os.environ.get("BENCH_RUN") or secrets.token_hex(3)
SEED = int(os.environ.get("BENCH_SEED", "1"))
USER_RPS = float(os.environ.get("BENCH_USER_RPS", "10"))
LARGE_RPS = float(os.environ.get("BENCH_LARGE_RPS", "0"))
LARGE_SIZE = int(os.environ.get("BENCH_LARGE_SIZE", "3000000"))
LARGE_USERS = math.ceil(LARGE_RPS / 2) if LARGE_RPS > 0 else 0  # each sends at most 2/s

_HEADERS = {"Content-Type": "application/json"}
_stream = iter(Mix(SEED, RUN))
_large = LargeStream(RUN, LARGE_SIZE)
_large_next = 0
_log: TextIO | None = None


def _record(stream: str, index: int, status: int, started: float) -> None:
    if _log is not None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        _log.write(f"{stream} {index} {status} {elapsed_ms:.3f}\n")


def poisson_throughput(rate: float) -> Any:
    """A wait_time giving `rate` sends/s on average, each gap drawn anew; a user that fell
    behind sends at once but does not burst to catch up (as `constant_throughput`)."""

    def wait_time(user: Any) -> float:
        now = time.monotonic()
        # The gap runs from the previous send, so the answer's latency is not added to it.
        due = max(getattr(user, "_due", now) + random.expovariate(rate), now)
        user._due = due
        return due - now

    return wait_time


@events.init.add_listener
def _open_log(**_: Any) -> None:
    global _log
    path = os.environ.get("BENCH_LOG")
    if path:
        _log = open(path, "a", buffering=1 << 20)  # closed at quit


@events.quitting.add_listener
def _close_log(**_: Any) -> None:
    if _log is not None:
        _log.close()


class WebhookUser(FastHttpUser):
    """One 360dialog delivery connection posting the mix."""

    wait_time = poisson_throughput(USER_RPS)
    connection_timeout = 10.0
    network_timeout = 30.0  # longer than the 5 s budget, so a slow answer is measured, not cut

    @task
    def post(self) -> None:
        request = next(_stream)
        started = time.perf_counter()
        response = self.client.post(
            f"/webhook/{request.channel}", data=request.body, headers=_HEADERS, name=request.kind
        )
        _record("mix", request.index, response.status_code or 0, started)


class LargeBodyUser(FastHttpUser):
    """3 MB inbound texts beside the mix (Meta's payload cap), when BENCH_LARGE_RPS is set."""

    abstract = LARGE_USERS == 0
    fixed_count = LARGE_USERS
    wait_time = poisson_throughput(LARGE_RPS / LARGE_USERS if LARGE_USERS else 1.0)
    connection_timeout = 10.0
    network_timeout = 30.0

    @task
    def post(self) -> None:
        global _large_next
        request = _large.body(_large_next)
        _large_next += 1
        started = time.perf_counter()
        response = self.client.post(
            f"/webhook/{request.channel}", data=request.body, headers=_HEADERS, name=request.kind
        )
        _record("large", request.index, response.status_code or 0, started)
