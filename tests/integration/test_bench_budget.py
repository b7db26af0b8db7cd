"""`python -m bench budget` end to end: locust, a real `wabahook serve` and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_budget_run_passes_end_to_end(server_dsn: str) -> None:
    # The runner makes (and drops) its own database on the test server.
    result = subprocess.run(
        [
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
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[PASS] events stored == events acknowledged" in output, output
    assert "[FAIL]" not in output, output
    assert "answered 200: 0 " not in output, output
