"""The bench charts: each drawn from synthetic saved figures into a valid PNG; without
matplotlib, one line saying they were skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import charts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENVIRONMENT = {"cpu": "Test CPU, 2 CPUs, usable [0, 1]", "wabahook": "0.2.0 (abc1234)"}


def _step(rate: float, p50: float, p99: float, outcome: str = "held") -> dict[str, Any]:
    return {"rate": rate, "p50_ms": p50, "p99_ms": p99, "outcome": outcome}


CAPACITY: dict[str, Any] = {
    "environment": ENVIRONMENT,
    "body": "mix",
    "seconds": 5,
    "budget_ms": 5000.0,
    "median_target_ms": 250.0,
    "p99_limit_ms": 100.0,
    "servers": [
        {
            "name": "wabahook",
            "capacity": 6000.0,
            "limited": 7000.0,
            "ceiling": False,
            "steps": [
                _step(250, 2.1, 6.0),
                _step(1000, 2.5, 9.0),
                _step(4000, 4.0, 30.0),
                _step(8000, 150.0, 900.0, "missed"),
                _step(6000, 9.0, 80.0),
                _step(7000, 12.0, 95.0, "client"),  # wrk could not offer it
            ],
        },
        {
            "name": "typical",
            "capacity": 2000.0,
            "limited": None,
            "ceiling": False,
            "steps": [
                _step(250, 3.0, 12.0),
                _step(2000, 20.0, 90.0),
                _step(4000, 0.0, 0.0, "missed"),  # nothing answered: not on a log axis
            ],
        },
    ],
}


def _point(label: str, rps: float, connections: int = 0, rate: float = 0.0) -> dict[str, Any]:
    return {"label": label, "rps": rps, "connections": connections, "rate": rate}


COMPARE: dict[str, Any] = {
    "environment": ENVIRONMENT,
    "body": "cloud-text-1024",
    "contests": [
        {"name": "bare", "points": [_point("64 conns", 45000, 64), _point("256 conns", 41000)]},
        {
            "name": "wabahook",
            "points": [
                _point("64 conns", 9000, 64),
                _point("256 conns", 8500, 256),
                _point("4,500/s paced", 4400, 64, 4500.0),
            ],
        },
        {"name": "unmetered", "points": [_point("64 conns", 8800, 64)]},
        {"name": "typical", "points": [_point("64 conns", 3000, 64), _point("256 conns", 2700)]},
    ],
}


def _assert_png(path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = image.imread(path).shape
    assert width > 400 and height > 300


def test_latency_against_rate_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = charts.save_latency_vs_rate(CAPACITY, [tmp_path / "run", tmp_path / "docs"])
    assert paths == [
        tmp_path / "run" / charts.LATENCY_CHART,
        tmp_path / "docs" / charts.LATENCY_CHART,
    ]
    for path in paths:
        _assert_png(path)


def test_throughput_against_connections_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    (path,) = charts.save_throughput_vs_connections(COMPARE, [tmp_path])
    assert path == tmp_path / charts.THROUGHPUT_CHART
    _assert_png(path)


def test_connections_of_compare_points() -> None:
    assert charts._connections(_point("64 conns", 1.0, 64)) == 64
    assert charts._connections({"label": "256 conns", "rps": 1.0}) == 256  # older results
    assert charts._connections(_point("4,500/s paced", 1.0, 64, 4500.0)) is None


def test_without_matplotlib_charts_are_skipped_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(charts, "available", lambda: False)
    assert charts.save_latency_vs_rate(CAPACITY, [tmp_path]) == []
    assert charts.save_throughput_vs_connections(COMPARE, [tmp_path]) == []
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"  {charts.SKIPPED}"] * 2
    assert list(tmp_path.iterdir()) == []
