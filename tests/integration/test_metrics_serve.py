"""Metrics through `wabahook serve --workers 2`: exact totals after a known sequence of
requests, summed across workers, and neither reset nor doubled when a worker is killed and
uvicorn starts another."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.corpus import cloud_text, onprem_text
from tests.support.cli import serve_argv
from tests.support.environment import scrubbed_environment, settings_environment
from tests.support.servers import ServerProcess, start_server, wait_ready
from tests.support.waiting import wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def serve(database_url: str, data_dir: Path) -> Iterator[ServerProcess]:
    settings = {
        "database_url": database_url,
        "data_dir": data_dir,
        "workers": 2,
        "metrics_listen": "main",
        "metrics_interval_s": 0.1,
        "basic_auth": "360dialog:s3cret",
    }
    env = scrubbed_environment(settings_environment(settings))
    server = start_server(serve_argv, env=env, log=data_dir / "serve.log")
    try:
        yield server
    finally:
        server.stop()


def _workers(server: ServerProcess) -> set[int]:
    """The worker processes of the uvicorn supervisor `serve` runs."""
    workers = set()
    for child in psutil.Process(server.process.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                workers.add(child.pid)
        except psutil.ZombieProcess:  # a killed worker not reaped yet: not a worker
            pass
    return workers


async def _samples(
    client: httpx.AsyncClient,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await client.get("/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _wait_for(
    client: httpx.AsyncClient, expected: dict[tuple[str, tuple[tuple[str, str], ...]], float]
) -> None:
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    async def published() -> bool:
        nonlocal seen
        seen = await _samples(client)
        return all(seen.get(key) == value for key, value in expected.items())

    try:
        await wait_until(published, timeout=20, what="the metrics to be published")
    except AssertionError:
        raise AssertionError(
            f"expected {expected}, got {{k: seen.get(k) for k in expected}}"
        ) from None


WEBHOOK_200 = ("wabahook_http_requests_total", (("code", "200"), ("route", "webhook")))
WEBHOOK_401 = ("wabahook_http_requests_total", (("code", "401"), ("route", "webhook")))
STORED = ("wabahook_bodies_total", (("outcome", "stored"),))
ACKS = ("wabahook_ack_duration_seconds_count", ())
TEXTS = (
    "wabahook_events_received_total",
    (("format", "cloud"), ("kind", "message"), ("type", "text")),
)
ONPREM_TEXTS = (
    "wabahook_events_received_total",
    (("format", "onprem"), ("kind", "message"), ("type", "text")),
)
NEW_EVENTS = ("wabahook_events_stored_total", ())
REDELIVERED = ("wabahook_events_deduplicated_total", ())
WRONG = ("wabahook_auth_refusals_total", (("reason", "wrong credentials"),))


async def test_exact_totals_across_two_workers_and_a_restart(serve: ServerProcess) -> None:
    await wait_ready(serve)
    auth = httpx.BasicAuth("360dialog", "s3cret")
    async with httpx.AsyncClient(base_url=serve.url, timeout=30) as client:
        # Separate connections, so both workers take requests.
        for i in range(6):
            async with httpx.AsyncClient(base_url=serve.url, auth=auth, timeout=30) as one:
                body = cloud_text(f"wamid.m{i}") if i % 3 else onprem_text(f"ABGG-m{i}")
                assert (await one.post("/webhook/m", content=body)).status_code == 200
        async with httpx.AsyncClient(base_url=serve.url, auth=auth, timeout=30) as one:
            redelivered = await one.post("/webhook/m", content=cloud_text("wamid.m1"))
            assert redelivered.status_code == 200
        wrong = httpx.BasicAuth("360dialog", "wrong")
        for _ in range(2):
            response = await client.post("/webhook/m", content=b"{}", auth=wrong)
            assert response.status_code == 401
        await _wait_for(
            client,
            {
                WEBHOOK_200: 7,
                WEBHOOK_401: 2,
                STORED: 7,
                ACKS: 7,
                TEXTS: 5,
                ONPREM_TEXTS: 2,
                WRONG: 2,
                NEW_EVENTS: 6,
                REDELIVERED: 1,
            },
        )

        before = _workers(serve)
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            now = _workers(serve)
            return len(now) == 2 and victim not in now

        await wait_until(replaced, timeout=30, what="uvicorn to start another worker")
        await wait_ready(serve)
        async with httpx.AsyncClient(base_url=serve.url, auth=auth, timeout=30) as one:
            assert (
                await one.post("/webhook/m", content=cloud_text("wamid.after"))
            ).status_code == 200
        # The dead worker's counts stay, the new worker's add: neither reset nor doubled.
        await _wait_for(
            client,
            {WEBHOOK_200: 8, STORED: 8, ACKS: 8, TEXTS: 6, WRONG: 2, NEW_EVENTS: 7, REDELIVERED: 1},
        )


async def test_a_separate_listener_keeps_metrics_off_the_webhook_port(
    database_url: str, data_dir: Path
) -> None:
    settings = {
        "database_url": database_url,
        "data_dir": data_dir,
        "metrics_listen": "127.0.0.1:0",  # any free port: serve logs the one it got
        "log_format": "json",
    }
    log = data_dir / "serve.log"
    server = start_server(
        serve_argv, env=scrubbed_environment(settings_environment(settings)), log=log
    )
    try:
        await wait_ready(server)
        port: list[int] = []

        async def listening() -> bool:
            for line in log.read_text().splitlines():
                record = json.loads(line) if line.startswith("{") else {}
                if record.get("action") == "metrics_listening":
                    port.append(record["port"])
                    return True
            return False

        await wait_until(listening, what="serve to log its metrics port")
        async with httpx.AsyncClient(timeout=30) as client:
            metrics = await client.get(f"http://127.0.0.1:{port[0]}/metrics")
            on_webhook_port = await client.get(f"{server.url}/metrics")
        assert metrics.status_code == 200
        assert 'wabahook_build_info{database="external"' in metrics.text
        assert on_webhook_port.status_code == 404
    finally:
        server.stop()
