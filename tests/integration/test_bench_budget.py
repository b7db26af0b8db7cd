"""`python -m bench budget` end to end: locust, a real `wabahook serve` and PostgreSQL."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from tests.support.environment import scrubbed_environment
from tests.support.processes import start_group, stop_group

pytestmark = pytest.mark.load

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 240.0  # seconds the whole run may take
INTERRUPT_TIMEOUT = 60.0  # seconds an interrupted runner gets to stop what it started


def test_budget_run_passes_end_to_end(server_dsn: str, tmp_path: Path) -> None:
    # The runner makes (and drops) its own database on the test server.
    argv = [
        sys.executable,
        "-m",
        "bench",
        "budget",
        "--rate",
        "40",
        "--duration",
        "4",
        "--user-rps",
        "5",
        "--database-url",
        server_dsn,
    ]
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        runner = start_group(
            argv, env=scrubbed_environment(), cwd=ROOT, stdout=stdout, stderr=stderr
        )
        try:
            runner.wait(timeout=RUN_TIMEOUT)
        finally:
            # Interrupted (a timeout, a failing test), the runner's `finally`s stop the server
            # and the locust it started, each in a process group of its own.
            returncode = stop_group(runner, INTERRUPT_TIMEOUT, signal.SIGINT)
    output = stdout_path.read_text(errors="replace") + stderr_path.read_text(errors="replace")
    assert returncode == 0, output
    assert "[PASS] events stored == events acknowledged" in output, output
    assert "[FAIL]" not in output, output
    assert "answered 200: 0 " not in output, output
