"""What every benchmark prints: the machine it ran on, latency statistics, tables, verdicts."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HISTOGRAM_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _wrk_version() -> str:
    if shutil.which("wrk") is None:
        return "not installed"
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(" Copyright")[0] if first else "?"


def _commit() -> str:
    """The commit of the code under test, marked when app/ differs from it."""
    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "no git commit"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "app"], capture_output=True, text=True
    ).stdout.strip()
    return head.stdout.strip() + (" with uncommitted changes in app/" if dirty else "")


def environment() -> dict[str, str]:
    """The facts that make two runs comparable."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    packages = (
        "uvicorn",
        "uvloop",
        "httptools",
        "msgspec",
        "asyncpg",
        "fastapi",
        "pydantic",
        "locust",
    )
    return {
        "cpu": f"{_cpu_model()}, {os.cpu_count()} CPUs, usable {sorted(os.sched_getaffinity(0))}",
        "memory": f"{mem / 2**30:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": ", ".join(f"{p} {_version(p)}" for p in packages),
        "wrk": _wrk_version(),
        "wabahook": f"{_version('wabahook')} ({_commit()})",
        # Anything else running skews every figure; ratios of one run are the robust ones.
        "load": "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min)",
    }


def print_environment(extra: dict[str, str] | None = None) -> None:
    for key, value in {**environment(), **(extra or {})}.items():
        print(f"  {key:<10} {value}")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    values = sorted(latencies_ms)
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "p99.9": percentile(values, 99.9),
        "max": values[-1] if values else 0.0,
    }


def histogram(latencies_ms: Sequence[float]) -> list[tuple[str, int]]:
    """Counts per latency bucket, each labelled by its upper edge."""
    counts = [0] * (len(HISTOGRAM_MS) + 1)
    for value in latencies_ms:
        for i, edge in enumerate(HISTOGRAM_MS):
            if value <= edge:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    labels = [f"<= {edge} ms" for edge in HISTOGRAM_MS] + [f"> {HISTOGRAM_MS[-1]} ms"]
    return list(zip(labels, counts, strict=True))


def print_histogram(latencies_ms: Sequence[float]) -> None:
    total = max(1, len(latencies_ms))
    rows = histogram(latencies_ms)
    widest = max((count for _, count in rows), default=1) or 1
    for label, count in rows:
        bar = "#" * round(40 * count / widest)
        print(f"  {label:>12} {count:>9} {100 * count / total:6.2f}%  {bar}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def mib(n: float) -> float:
    return n / 2**20


class Verdict:
    """Named pass/fail checks; the command exits non-zero if any failed."""

    def __init__(self) -> None:
        self.checks: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, ok, detail))
        return ok

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def print(self) -> None:
        for name, ok, detail in self.checks:
            print(f"  [{'PASS' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
        print(f"  => {'PASS' if self.passed else 'FAIL'}")


def save(command: str, result: dict[str, Any]) -> Path:
    """Keep the raw figures of a run beside the printed ones (bench/results is not versioned)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    payload = {"command": " ".join(sys.argv), "environment": environment(), **result}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def latest(command: str) -> Path | None:
    """The newest figures `save` kept for `command`, if any."""
    paths = sorted(RESULTS_DIR.glob(f"{command}-*.json"), key=lambda p: p.stat().st_mtime)
    return paths[-1] if paths else None
