"""Child processes in process groups of their own, started and stopped by PID.

A process started here leads a new session, so its process group holds whatever it forks
(uvicorn workers, an embedded PostgreSQL): stopping it signals the leader first, so it can
shut down gracefully, then SIGKILLs whatever is left of the group. Nothing is found by name.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

STOP_TIMEOUT = 60.0  # seconds a leader gets to exit after its signal before the group is killed


def start_group(
    argv: Sequence[str], *, env: Mapping[str, str], log: Path | None = None, **popen: Any
) -> subprocess.Popen[Any]:
    """Start argv as the leader of a new session and process group.

    stdin is /dev/null and stderr goes with stdout, which is appended to `log` (else
    discarded) unless `popen` says otherwise (e.g. `stdout=subprocess.PIPE`, `pass_fds`).
    """
    options: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.STDOUT,
        **popen,
    }
    if log is None:
        return subprocess.Popen(list(argv), env=dict(env), start_new_session=True, **options)
    with log.open("ab") as output:
        options["stdout"] = output
        return subprocess.Popen(list(argv), env=dict(env), start_new_session=True, **options)


def stop_group(
    process: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT, signum: int = signal.SIGTERM
) -> int:
    """Send `signum` to the leader, give it `timeout` seconds to exit, then SIGKILL its whole
    group (workers left behind, or the leader itself) and reap it; return its exit status
    (negative: the signal that ended it)."""
    if process.returncode is None:
        with suppress(ProcessLookupError):
            os.kill(process.pid, signum)
        _wait_for_exit(process, timeout)
    _kill_group(process.pid)
    return process.wait()


def is_running(pid: int) -> bool:
    """A process that has not exited (a zombie, exited but not reaped, counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def kill_group(process: subprocess.Popen[Any]) -> int:
    """kill -9 of the leader and everything in its group at once; reap the leader."""
    _kill_group(process.pid)
    return process.wait()


def _kill_group(pgid: int) -> None:
    # Also after the leader was reaped: the kernel does not hand out a process group's ID
    # again while any process is left in the group.
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _wait_for_exit(process: subprocess.Popen[Any], timeout: float) -> None:
    """Wait up to `timeout` for the process to exit without reaping it: until it is reaped,
    its PID, and so the ID of its process group, cannot be reused."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3): wait, and reap
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        return
    try:
        select.select([pidfd], [], [], timeout)  # readable once the process has exited
    finally:
        os.close(pidfd)
