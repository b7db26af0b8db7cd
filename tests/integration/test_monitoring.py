"""The Prometheus configuration, alert rules and Grafana dashboard in deploy/: checked with
the real promtool, alerts unit-tested on fed series, and every metric they name is one the
service exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from app.metrics import DEFINITIONS, NAMESPACE

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "wabahook.json"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must install promtool (Debian package prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ],
    ids=["config", "rules", "alert-tests"],
)
def test_promtool(args: list[str]) -> None:
    result = subprocess.run(
        [_promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _exported() -> set[str]:
    names = {"up", f"{NAMESPACE}_build_info"}
    for name, definition in DEFINITIONS.items():
        full = f"{NAMESPACE}_{name}"
        if definition.kind == "histogram":
            names |= {full + "_bucket", full + "_sum", full + "_count"}
        else:
            names.add(full)
    return names


def _referenced(expressions: list[str]) -> set[str]:
    found: set[str] = set()
    for expression in expressions:
        found |= set(re.findall(r"\b(wabahook_[a-z_]+|up)\b", expression))
    return found


def test_every_metric_the_alerts_use_is_exported() -> None:
    text = (PROMETHEUS / "alerts.yml").read_text()
    expressions = re.findall(r"^\s*expr: (.+)$", text, flags=re.MULTILINE)
    assert len(expressions) == 11
    assert _referenced(expressions) - _exported() == set()


def test_every_metric_the_dashboard_uses_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    referenced = _referenced(expressions)
    assert f"{NAMESPACE}_ack_duration_seconds_bucket" in referenced
    assert referenced - _exported() == set()
