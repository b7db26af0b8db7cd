"""The `wabahook` command line, run as a child process the way an operator runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.environment import scrubbed_environment
from tests.support.processes import kill_group, start_group

COMMAND_TIMEOUT = 120.0  # seconds a one-shot command (migrate, events, requests) may take


def wabahook_command() -> list[str]:
    """The console script installed next to this interpreter, else the same entry point."""
    script = shutil.which("wabahook", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from app.cli import main; main()"]


def serve_argv(fd: int, *options: str) -> list[str]:
    """`wabahook serve` listening on the inherited, already listening socket `fd`."""
    return [*wabahook_command(), "serve", "--fd", str(fd), *options]


def run_wabahook(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT,
    check: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run one `wabahook` command to completion, output captured; `env` defaults to this
    environment without any wabahook setting.

    The command leads a process group of its own: if it overruns `timeout`, it is killed with
    whatever it started (an embedded PostgreSQL). When it ends by itself, nothing is touched,
    so a server it left running stays visible to the test.
    """
    argv = [*wabahook_command(), *args]
    command = start_group(
        argv,
        env=env if env is not None else scrubbed_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = command.communicate(timeout=timeout)
    except BaseException:
        kill_group(command)
        command.communicate()
        raise
    if check and command.returncode != 0:
        raise subprocess.CalledProcessError(command.returncode, argv, stdout, stderr)
    return subprocess.CompletedProcess(argv, command.returncode, stdout, stderr)
