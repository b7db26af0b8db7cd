"""GET /metrics: every worker's published metrics, summed, in Prometheus' text format.

Served either by its own listener in the `serve` process (`WABAHOOK_METRICS_LISTEN` as
host:port, the default: Prometheus reaches it, the public TLS proxy does not) or on the
webhook port (`main`, for deployments whose proxy passes only /webhook on).
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from app.asgi_types import Receive, Scope, Send, respond
from app.config import Config
from app.embedded import EmbeddedPostgres
from app.metrics import SnapshotCollector

logger = logging.getLogger(__name__)


def metrics_directory(config: Config) -> Path:
    return Path(config.data_dir) / "metrics"


def _database_mode(config: Config) -> str:
    """`serve` hands its workers the embedded server's DSN like any other: compare with it."""
    if config.database_url is None:
        return "embedded"
    running = EmbeddedPostgres.running_dsn(Path(config.data_dir))
    return "embedded" if config.database_url == running else "external"


def registry_for(config: Config) -> CollectorRegistry:
    info = {"version": importlib.metadata.version("wabahook"), "database": _database_mode(config)}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(metrics_directory(config), info))
    return registry


class MetricsEndpoint:
    def __init__(self, config: Config) -> None:
        self.registry = registry_for(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        body = generate_latest(self.registry)
        headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def start_listener(config: Config) -> None:
    """The separate /metrics listener, in a thread of the `serve` process."""
    host, _, port = config.metrics_listen.rpartition(":")
    server, _ = start_http_server(int(port), host.strip("[]"), registry_for(config))
    logger.info(
        "metrics on http://%s:%d/metrics",
        host,
        server.server_port,
        extra={"action": "metrics_listening", "port": server.server_port},
    )
