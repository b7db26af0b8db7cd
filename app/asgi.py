"""The ASGI application: routes, the middleware stack, and the lifespan.

POST /webhook[/<channel>]   store the notification, 200 once durable
GET  /webhook[/<channel>]   Meta's verification handshake, when a verify token is set
GET  /healthz               the process answers
GET  /readyz                the database answers and the buffer has room
"""

from __future__ import annotations

import logging
import traceback

from app.asgi_types import ASGIApp, Receive, Scope, Send, respond
from app.auth import HeaderAuth, Policies, SignatureCheck, verify_subscription
from app.body_limit import BodyLimit
from app.channel_budget import ChannelBudget, retry_after
from app.channels import CHANNEL, load_channels
from app.config import Config
from app.error_guard import ErrorGuard
from app.errors import NotDurable, Overloaded
from app.metrics import Metrics, event_type_label
from app.metrics_endpoint import MetricsEndpoint
from app.records import incoming
from app.request_metrics import WEBHOOK_PREFIX, RequestMetrics
from app.service import Service, running

logger = logging.getLogger(__name__)

DEFAULT_CHANNEL = "default"


class Wabahook:
    """Routes requests and runs the lifespan; every other concern is its own ASGI class."""

    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._metrics_endpoint = (
            MetricsEndpoint(config) if config.metrics_listen == "main" else None
        )
        self.service: Service | None = None
        self._retry_after = [(b"retry-after", str(config.retry_after_s).encode())]
        self._budget = (
            ChannelBudget(config.channel_bytes_per_s, config.channel_burst_bytes)
            if config.channel_bytes_per_s
            else None
        )
        self.policies = Policies(config, load_channels(config.channels_file))
        self._webhook = self.webhook_stack(self._ingest)

    def webhook_stack(self, ingest: ASGIApp) -> ASGIApp:
        """The webhook route's own middleware around `ingest`, outermost first: credentials
        before a byte of the body is read, the size-capped read, the signature over it. A
        check no channel requires is left out: every layer costs each request a call."""
        if self.policies.any_signed:
            ingest = SignatureCheck(ingest, self.policies, self.metrics)
        limited = BodyLimit(ingest, self.config.max_body, self.config.body_timeout_s)
        if self.policies.all_open:
            return limited
        return HeaderAuth(limited, self.policies, self.metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            # Not served. Closing before accepting makes the server refuse the handshake
            # (uvicorn answers 403), a client error rather than an aborted connection.
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == WEBHOOK_PREFIX or path.startswith(WEBHOOK_PREFIX + "/"):
            # Only the bare path is the default channel: "/webhook/" names no channel.
            prefix = len(WEBHOOK_PREFIX) + 1
            channel = DEFAULT_CHANNEL if path == WEBHOOK_PREFIX else path[prefix:]
            if not CHANNEL.fullmatch(channel):
                await respond(send, 404, b"not found\n")
            elif method == "POST":
                scope["wabahook.channel"] = channel
                await self._webhook(scope, receive, send)
            else:
                await self._not_post(scope, send, channel)
        elif path == "/metrics" and self._metrics_endpoint is not None:
            await self._metrics_endpoint(scope, receive, send)
        elif path in ("/healthz", "/readyz"):
            if method not in ("GET", "HEAD"):
                await respond(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            elif path == "/healthz":
                await respond(send, 200, b"ok\n")
            else:
                await self._readyz(send)
        else:
            await respond(send, 404, b"not found\n")

    async def _not_post(self, scope: Scope, send: Send, channel: str) -> None:
        """A GET is Meta's verification handshake where a verify token is set; else 405."""
        policy = self.policies(channel)
        if scope["method"] == "GET":
            answer = verify_subscription(policy, scope["query_string"])
            if answer is not None:
                await respond(send, *answer)
                return
        allow = b"GET, POST" if policy.verify_token is not None else b"POST"
        await respond(send, 405, b"method not allowed\n", [(b"allow", allow)])

    async def _ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.service is not None, "lifespan startup has not run"
        message = await receive()
        channel = scope["wabahook.channel"]
        body = message["body"]
        if self._budget is not None:
            wait = self._budget.take(channel, len(body))
            if wait:
                self.metrics.inc("channel_budget_refusals_total")
                seconds = retry_after(wait, self.config.retry_after_s)
                retry = [(b"retry-after", str(seconds).encode())]
                await respond(send, 503, b"channel over its byte budget, retry later\n", retry)
                return
        request = incoming(body, channel, max_events=self.config.max_events)
        metrics = self.metrics
        metrics.inc("bodies_total", (request.outcome,))
        for event in request.events:
            label = event_type_label(event.kind, event.type)
            metrics.inc("events_received_total", (request.format, event.kind, label))
        try:
            await self.service.copy_buffer.submit(request)
        except Overloaded:
            await respond(send, 503, b"overloaded, retry later\n", self._retry_after)
        except NotDurable:
            await respond(send, 503, b"not stored, retry later\n", self._retry_after)
        else:
            await respond(send, 200, b"ok\n")

    async def _readyz(self, send: Send) -> None:
        if self.service is None:
            await respond(send, 503, b"starting\n")
            return
        ready, reason = await self.service.ready()
        await respond(send, 200 if ready else 503, reason.encode() + b"\n")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            async with running(self.config, self.metrics) as service:
                self.service = service
                if self.policies.all_open:
                    logger.warning(
                        "NO AUTHENTICATION: anyone who learns the webhook URL can store "
                        "whatever they post; set WABAHOOK_BASIC_AUTH, WABAHOOK_AUTH_HEADER or "
                        "WABAHOOK_APP_SECRET, or a channels file",
                        extra={"action": "auth_disabled"},
                    )
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                assert message["type"] == "lifespan.shutdown"
        except BaseException:
            text = traceback.format_exc()
            if self.service is None:
                await send({"type": "lifespan.startup.failed", "message": text})
            else:
                await send({"type": "lifespan.shutdown.failed", "message": text})
            raise
        self.service = None
        await send({"type": "lifespan.shutdown.complete"})


def build_app(config: Config) -> ASGIApp:
    if not config.metrics:  # nothing counts, so nothing wraps the request
        return ErrorGuard(Wabahook(config, Metrics.disabled()), config.retry_after_s)
    metrics = Metrics()
    return RequestMetrics(ErrorGuard(Wabahook(config, metrics), config.retry_after_s), metrics)


def create_app() -> ASGIApp:
    """uvicorn factory (`app.asgi:create_app`): settings from the environment."""
    return build_app(Config.from_environ())
