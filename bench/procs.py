"""Processes the benchmarks start: pinned to CPUs, measured while they run, always stopped.

Starting and stopping is the test harness's (`tests.support`): every process leads a process
group of its own and is stopped by its PID, uvicorn's worker processes with their supervisor,
and every server listens on a loopback socket bound before it started. What is the
benchmark's own is here: CPU pinning and CPU and memory accounting.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.processes import start_group
from tests.support.servers import (
    ServerExited,
    ServerProcess,
    start_server,
    wait_ready_blocking,
)
from tests.support.waiting import WaitTimedOut

STOP_TIMEOUT = 20.0  # seconds a process gets to exit after SIGTERM before its group is killed
READY_TIMEOUT = 90.0  # seconds a server gets to answer its readiness path


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


def spawn(
    argv: Sequence[str],
    *,
    cpus: frozenset[int] | None,
    env: Mapping[str, str],
    log: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv pinned to `cpus`, leading a process group of its own."""
    return start_group(pin_argv(argv, cpus), env=env, log=log, cwd=cwd)


@dataclass
class Server:
    """A server under test, listening on 127.0.0.1:port."""

    name: str
    listening: ServerProcess

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.listening.process

    @property
    def port(self) -> int:
        return self.listening.port

    @property
    def url(self) -> str:
        return self.listening.url

    @property
    def log(self) -> Path | None:
        return self.listening.log

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def wait_ready(self, path: str, timeout: float = READY_TIMEOUT) -> None:
        """Poll `path` until it answers 200; RuntimeError if the process dies or time runs out
        (the load must not start while the server is still starting)."""
        try:
            wait_ready_blocking(self.listening, path, timeout)
        except ServerExited as exc:
            raise RuntimeError(f"{self.name}: {exc}") from exc
        except WaitTimedOut as exc:
            raise RuntimeError(
                f"{self.name} not ready after {timeout:.0f} s; see {self.log}"
            ) from exc

    def stop(self) -> None:
        self.listening.stop(STOP_TIMEOUT)


@contextmanager
def server(
    name: str,
    command: Callable[[int], Sequence[str]],
    *,
    cpus: frozenset[int] | None,
    env: Mapping[str, str],
    log: Path,
    ready_path: str = "/healthz",
) -> Iterator[Server]:
    """`command(fd)` pinned to `cpus`, serving on the listening loopback socket `fd`; ready
    before this yields, stopped by its PID (and process group) afterwards."""
    listening = start_server(lambda fd: pin_argv(command(fd), cpus), env=env, log=log)
    running = Server(name, listening)
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
