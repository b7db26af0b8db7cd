"""Counts every answered request by route and status code, and times acknowledgements.

The outermost ASGI class, so it also sees the 503 the error guard answers. The time of a
webhook acknowledgement runs from the moment the app got the request (its head parsed) to the
start of its 200.
"""

from __future__ import annotations

import time

from app.asgi_types import ASGIApp, Message, Receive, Scope, Send
from app.metrics import ACK_BUDGET_S, Metrics

WEBHOOK_PREFIX = "/webhook"
_NAMED_ROUTES = {"/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics"}


def route_label(path: str, method: str) -> str:
    """A fixed set of values: paths come from clients and must not grow the series."""
    if path == WEBHOOK_PREFIX or path.startswith(WEBHOOK_PREFIX + "/"):
        return "webhook" if method == "POST" else "verify" if method == "GET" else "other"
    return _NAMED_ROUTES.get(path, "other")


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = route_label(scope["path"], scope["method"])
        metrics = self.metrics

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status: int = message["status"]
                metrics.inc("http_requests_total", (route, str(status)))
                if route == "webhook" and status == 200:
                    elapsed = time.perf_counter() - started
                    metrics.observe("ack_duration_seconds", elapsed)
                    if elapsed > ACK_BUDGET_S:
                        metrics.inc("acks_over_budget_total")
            await send(message)

        await self.app(scope, receive, counting_send)
