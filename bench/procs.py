"""Processes the benchmarks start: pinned to CPUs, measured while they run, always stopped.

Every process gets its own session (`start_new_session=True`), so stopping it signals its
whole process group: uvicorn's worker processes go with their supervisor.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

STOP_TIMEOUT = 20.0  # seconds a process group gets to exit after SIGTERM before SIGKILL
READY_TIMEOUT = 90.0  # seconds a server gets to answer its readiness path
_POLL = 0.05  # seconds between readiness probes


@dataclass(frozen=True)
class Placement:
    """Which CPUs the server, the load generator and PostgreSQL run on (None: anywhere)."""

    server: frozenset[int] | None
    client: frozenset[int] | None
    postgres: frozenset[int] | None

    @classmethod
    def plan(cls, postgres: str = "server") -> Placement:
        """Server on the last CPU, client on the first; PostgreSQL beside one of them."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None, None)
        server, client = frozenset(cpus[-1:]), frozenset(cpus[:1])
        where = {"server": server, "client": client, "any": None}
        return cls(server, client, where[postgres])

    def describe(self) -> str:
        def name(cpus: frozenset[int] | None) -> str:
            return "any CPU" if cpus is None else "CPU " + ",".join(map(str, sorted(cpus)))

        return (
            f"server on {name(self.server)}, load generator on {name(self.client)}, "
            f"PostgreSQL on {name(self.postgres)}"
        )


def pin_argv(argv: Sequence[str], cpus: frozenset[int] | None) -> list[str]:
    """Prefix argv with taskset so the process and every child it forks inherit the CPUs."""
    if cpus is None:
        return list(argv)
    if shutil.which("taskset") is None:
        raise RuntimeError("taskset (util-linux) is needed to pin processes to CPUs")
    return ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv]


def pin_tree(pid: int, cpus: frozenset[int] | None) -> None:
    """Pin a running process and its current children; later forks inherit it."""
    if cpus is None:
        return
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            proc.cpu_affinity(sorted(cpus))
        except psutil.NoSuchProcess:
            pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    argv: Sequence[str],
    *,
    cpus: frozenset[int] | None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            pin_argv(argv, cpus),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def stop_group(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group the process leads, then SIGKILL what is left after timeout."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    # Workers may outlive their supervisor; nothing in the group may survive the benchmark.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@dataclass
class Server:
    """A server under test, listening on 127.0.0.1:port."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def wait_ready(self, path: str, timeout: float = READY_TIMEOUT) -> None:
        """Poll `path` until it answers 200, the process dies, or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; see {self.log}")
            time.sleep(_POLL)

    def stop(self) -> None:
        stop_group(self.proc)


@contextmanager
def server(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    cpus: frozenset[int] | None,
    env: dict[str, str],
    log: Path,
    ready_path: str = "/healthz",
) -> Iterator[Server]:
    running = Server(name, spawn(argv, cpus=cpus, env=env, log=log), port, log)
    try:
        running.wait_ready(ready_path)
        yield running
    finally:
        running.stop()


@dataclass
class Usage:
    """RSS and CPU time of a set of processes over one measured interval."""

    rss_samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, total, largest)
    cpu_seconds: float = 0.0

    @property
    def peak_rss(self) -> int:
        return max((total for _, total, _ in self.rss_samples), default=0)

    @property
    def peak_process_rss(self) -> int:
        return max((largest for _, _, largest in self.rss_samples), default=0)


def _cpu_seconds(procs: Sequence[psutil.Process], seen: dict[int, float]) -> None:
    # Own time only: a reaped child's time would otherwise count twice (its last sample, and
    # its parent's children_* fields).
    for proc in procs:
        try:
            times = proc.cpu_times()
            seen[proc.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            pass


class Sampler:
    """Samples the RSS of a process tree in a thread and sums its CPU time over an interval."""

    def __init__(self, roots: Sequence[int], interval: float = 0.5) -> None:
        self._roots = list(roots)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start_cpu: dict[int, float] = {}
        self._end_cpu: dict[int, float] = {}
        self._began = 0.0
        self.usage = Usage()

    def _tree(self) -> list[psutil.Process]:
        procs: list[psutil.Process] = []
        for pid in self._roots:
            try:
                root = psutil.Process(pid)
                procs += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return procs

    def _sample(self) -> None:
        procs = self._tree()
        sizes = []
        for proc in procs:
            try:
                sizes.append(proc.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        if sizes:
            t = time.monotonic() - self._began
            self.usage.rss_samples.append((t, sum(sizes), max(sizes)))
        _cpu_seconds(procs, self._end_cpu)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> Sampler:
        self._began = time.monotonic()
        _cpu_seconds(self._tree(), self._start_cpu)
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        # Processes born during the interval started from zero CPU time.
        self.usage.cpu_seconds = sum(
            end - self._start_cpu.get(pid, 0.0) for pid, end in self._end_cpu.items()
        )
