"""Dispatcher processes, as `serve` starts its own: `python -m app.dispatcher` with exactly the
settings given, in a process group of its own, stopped by PID."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from app.config import EXPORT_VARIABLE, Config
from tests.support.environment import scrubbed_environment
from tests.support.processes import start_group, stop_group

REPO = Path(__file__).resolve().parents[2]


def start_dispatcher(
    config: Config, log: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.Popen[Any]:
    """`env`: more variables for the process (a handler's own settings)."""
    environment = scrubbed_environment({EXPORT_VARIABLE: msgspec.json.encode(config).decode()})
    environment.update(env or {})
    environment["PYTHONPATH"] = str(REPO)
    argv = [sys.executable, "-m", "app.dispatcher"]
    return start_group(argv, env=environment, log=log, cwd=REPO)


@contextmanager
def running_dispatcher(
    config: Config, log: Path | None = None, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[Any]]:
    process = start_dispatcher(config, log, env)
    try:
        yield process
    finally:
        stop_group(process)
