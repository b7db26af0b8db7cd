"""Metrics in-process: counting, snapshots summed across workers, the exposition, and the
request counter around the real router."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.asgi import Wabahook
from app.config import Config
from app.metrics import (
    ACK_BUCKETS,
    DEFINITIONS,
    Metrics,
    SnapshotCollector,
    SnapshotWriter,
    event_type_label,
)
from app.request_metrics import RequestMetrics, route_label

pytestmark = pytest.mark.anyio


def scrape(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and labels."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(directory, {"version": "1", "database": "embedded"}))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_and_histograms_of_two_workers_are_summed(tmp_path: Path) -> None:
    for requests in (3, 4):
        metrics = Metrics()
        for _ in range(requests):
            metrics.inc("http_requests_total", ("webhook", "200"))
            metrics.observe("ack_duration_seconds", 0.003)
        SnapshotWriter(metrics, tmp_path, 1.0).write()
    samples = scrape(tmp_path)
    assert samples[("wabahook_http_requests_total", (("code", "200"), ("route", "webhook")))] == 7
    assert samples[("wabahook_ack_duration_seconds_count", ())] == 7
    assert samples[("wabahook_ack_duration_seconds_bucket", (("le", "0.0025"),))] == 0
    assert samples[("wabahook_ack_duration_seconds_bucket", (("le", "0.005"),))] == 7
    assert samples[("wabahook_ack_duration_seconds_bucket", (("le", "+Inf"),))] == 7
    assert samples[("wabahook_ack_duration_seconds_sum", ())] == pytest.approx(0.021)


def test_a_bucket_holds_values_up_to_and_including_its_bound(tmp_path: Path) -> None:
    metrics = Metrics()
    for value in (0.001, 0.0010001, 5.0, 5.0001, 99.0):
        metrics.observe("ack_duration_seconds", value)
    SnapshotWriter(metrics, tmp_path, 1.0).write()
    samples = scrape(tmp_path)
    bucket = "wabahook_ack_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.001"),))] == 1
    assert samples[(bucket, (("le", "0.0025"),))] == 2
    assert samples[(bucket, (("le", "5.0"),))] == 3
    assert samples[(bucket, (("le", "10.0"),))] == 4
    assert samples[(bucket, (("le", "+Inf"),))] == 5
    assert len([k for k in samples if k[0] == bucket]) == len(ACK_BUCKETS) + 1


def test_a_dead_workers_counters_stay_but_its_gauges_go(tmp_path: Path) -> None:
    live = Metrics()
    live.inc("flush_failures_total")
    live.gauge("buffer_rows", lambda: 5)
    SnapshotWriter(live, tmp_path, 1.0).write()
    # A worker that has exited: its file, with a PID no process has.
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = Metrics()
    dead.inc("flush_failures_total", amount=2)
    dead.gauge("buffer_rows", lambda: 100)
    snapshot = dead.snapshot()
    snapshot.pid = int(done.stdout)
    (tmp_path / "dead.json").write_bytes(msgspec.json.encode(snapshot))
    samples = scrape(tmp_path)
    assert samples[("wabahook_flush_failures_total", ())] == 3
    assert samples[("wabahook_buffer_rows", ())] == 5


def test_every_declared_metric_is_exported_before_anything_happened(tmp_path: Path) -> None:
    names = {name for name, _ in scrape(tmp_path)}
    for name, definition in DEFINITIONS.items():
        exported = f"wabahook_{name}"
        if definition.kind == "histogram":
            exported += "_count"
        assert exported in names, name
    assert ("wabahook_build_info", (("database", "embedded"), ("version", "1"))) in scrape(tmp_path)
    assert scrape(tmp_path)[("wabahook_bodies_total", (("outcome", "quarantined"),))] == 0


def test_a_half_written_or_foreign_file_is_skipped(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.inc("spooled_batches_total")
    SnapshotWriter(metrics, tmp_path, 1.0).write()
    (tmp_path / "broken.json").write_bytes(b'{"pid": 1, "counters": {')
    assert scrape(tmp_path)[("wabahook_spooled_batches_total", ())] == 1


def test_input_cannot_add_series() -> None:
    assert event_type_label("message", "text") == "text"
    assert event_type_label("message", "x" * 50) == "other"
    assert event_type_label("status", "read") == "read"
    assert event_type_label("error", "131047") == "error"
    assert event_type_label("other", None) == "other"
    assert route_label("/webhook/acme", "POST") == "webhook"
    assert route_label("/webhook", "GET") == "verify"
    assert route_label("/webhook/acme", "PUT") == "other"
    assert route_label("/wp-admin/" + "a" * 100, "GET") == "other"
    assert route_label("/metrics", "GET") == "metrics"


async def test_the_router_counts_each_answer_by_route_and_code(tmp_path: Path) -> None:
    metrics = Metrics()
    app = RequestMetrics(Wabahook(Config(basic_auth=["u:p"]), metrics), metrics)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/healthz")
        await client.get("/healthz")
        await client.get("/nowhere")
        await client.post("/webhook/c", content=b"{}")  # no credentials: 401
        await client.put("/webhook/c")
    SnapshotWriter(metrics, tmp_path, 1.0).write()
    samples = scrape(tmp_path)

    def requests(route: str, code: str) -> float:
        return samples[("wabahook_http_requests_total", (("code", code), ("route", route)))]

    assert requests("healthz", "200") == 2
    assert requests("other", "404") == 1
    assert requests("webhook", "401") == 1
    assert requests("other", "405") == 1
    assert requests("webhook", "200") == 0  # pre-initialised
    reason = (("reason", "missing credentials"),)
    assert samples[("wabahook_auth_refusals_total", reason)] == 1
    assert samples[("wabahook_ack_duration_seconds_count", ())] == 0


def test_disabled_metrics_count_nothing(tmp_path: Path) -> None:
    metrics = Metrics.disabled()
    metrics.inc("flush_failures_total")
    metrics.observe("flush_rows", 3)
    SnapshotWriter(metrics, tmp_path, 1.0).write()
    assert scrape(tmp_path)[("wabahook_flush_failures_total", ())] == 0


def test_snapshot_files_are_one_per_worker_start(tmp_path: Path) -> None:
    first = SnapshotWriter(Metrics(), tmp_path, 1.0)
    second = SnapshotWriter(Metrics(), tmp_path, 1.0)  # same PID, a restarted worker
    first.write()
    second.write()
    assert first.path != second.path
    assert all(path.name.startswith(f"{os.getpid()}-") for path in tmp_path.glob("*.json"))
