"""Servers on 127.0.0.1 that listen before they start.

The socket is bound and listening in this process, then handed to the server process
(`pass_fds`, `--fd N`): no other process can take the port in between, and clients can
connect at once (they queue in the backlog until the server accepts), so nothing polls for
the port. A readiness wait (`wait_ready`) is only for callers that need the service ready,
not just reachable.
"""

from __future__ import annotations

import asyncio
import http.client
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from app.config import EXPORT_VARIABLE, Config
from tests.support.environment import scrubbed_environment
from tests.support.processes import STOP_TIMEOUT, kill_group, start_group, stop_group
from tests.support.waiting import wait_until, wait_until_blocking

BACKLOG = 4096
READY_TIMEOUT = 60.0  # seconds a server gets to answer its readiness path
PROBE_TIMEOUT = 2.0  # seconds one readiness request may take


def loopback_socket(backlog: int = BACKLOG) -> socket.socket:
    """A listening socket on 127.0.0.1: clients can connect (and queue) before the server
    accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # uvicorn wraps an inherited descriptor as AF_UNIX, so the event loop never sets
        # TCP_NODELAY on the connections it accepts; they inherit it from the listener. Without
        # it, a response written in two parts waits ~40 ms for the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class ServerExited(RuntimeError):
    """The server process ended while it was expected to serve."""


@dataclass
class ServerProcess:
    """A server process leading its own process group, listening on 127.0.0.1:port."""

    process: subprocess.Popen[Any]
    port: int
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check_running(self) -> None:
        if self.process.poll() is not None:
            where = f"; see {self.log}" if self.log else ""
            raise ServerExited(f"server exited with {self.process.returncode}{where}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (graceful shutdown), then SIGKILL of what is left of its group."""
        return stop_group(self.process, timeout)

    def kill(self) -> int:
        """kill -9 of the server and everything in its process group."""
        return kill_group(self.process)


def start_server(
    command: Callable[[int], Sequence[str]],
    *,
    env: Mapping[str, str],
    log: Path | None = None,
    **popen: Any,
) -> ServerProcess:
    """Start `command(fd)` in a process group of its own, `fd` being a loopback socket that
    already listens. This process's copy is closed once the child holds it, so the port
    closes with the server process and is never left listening with nobody to accept."""
    with loopback_socket() as sock:
        process = start_group(
            command(sock.fileno()), env=env, log=log, pass_fds=(sock.fileno(),), **popen
        )
        return ServerProcess(process, int(sock.getsockname()[1]), log)


def answers_ok(port: int, path: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """One GET of `path` on 127.0.0.1:port answered 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


async def wait_ready(
    server: ServerProcess, path: str = "/readyz", timeout: float = READY_TIMEOUT
) -> None:
    """Poll `path` until it answers 200; fail at once if the server exits."""

    async def ready() -> bool:
        server.check_running()
        return await asyncio.to_thread(answers_ok, server.port, path)

    await wait_until(ready, timeout=timeout, what=f"{server.url}{path} to answer 200")


def wait_ready_blocking(
    server: ServerProcess, path: str = "/readyz", timeout: float = READY_TIMEOUT
) -> None:
    """`wait_ready` for code without an event loop."""

    def ready() -> bool:
        server.check_running()
        return answers_ok(server.port, path)

    wait_until_blocking(
        ready, timeout=timeout, what=f"{server.url}{path} to answer 200", interval=0.05
    )


# The settings `wabahook serve` runs uvicorn with (app.server), on the inherited socket.
_UVICORN_RUN = (
    "import msgspec, uvicorn; from app import server; from app.config import Config; "
    "config = msgspec.structs.replace(Config.from_environ(), fd={fd}); "
    "uvicorn.Server(server.uvicorn_config(config)).run()"
)


@contextmanager
def running_server(config: Config) -> Iterator[str]:
    """A real uvicorn process serving wabahook with exactly `config` and the uvicorn settings
    of `wabahook serve`, on a pre-bound loopback port; yields its base URL.

    Clients queue in the socket's backlog until the lifespan startup is done: no polling, no
    sleep. The process is stopped by its PID and must have shut down cleanly.
    """
    env = scrubbed_environment({EXPORT_VARIABLE: msgspec.json.encode(config).decode()})
    with tempfile.TemporaryFile() as output:
        server = start_server(
            lambda fd: [sys.executable, "-c", _UVICORN_RUN.format(fd=fd)],
            env=env,
            stdout=output,
        )
        try:
            yield server.url
        finally:
            returncode = server.stop()
            output.seek(0)
            # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done.
            if returncode not in (0, -signal.SIGTERM):
                raise AssertionError(output.read().decode(errors="replace"))
