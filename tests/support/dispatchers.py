"""Dispatcher processes, as `serve` starts its own: `python -m app.dispatcher` with exactly the
settings given, in a process group of its own, stopped by PID."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from app.config import EXPORT_VARIABLE, Config
from tests.support.environment import scrubbed_environment
from tests.support.processes import start_group, stop_group

REPO = Path(__file__).resolve().parents[2]


def start_dispatcher(config: Config, log: Path | None = None) -> subprocess.Popen[Any]:
    env = scrubbed_environment({EXPORT_VARIABLE: msgspec.json.encode(config).decode()})
    env["PYTHONPATH"] = str(REPO)
    return start_group([sys.executable, "-m", "app.dispatcher"], env=env, log=log, cwd=REPO)


@contextmanager
def running_dispatcher(config: Config, log: Path | None = None) -> Iterator[subprocess.Popen[Any]]:
    process = start_dispatcher(config, log)
    try:
        yield process
    finally:
        stop_group(process)
