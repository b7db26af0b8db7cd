"""The outer guard: an unexpected error is logged and answered 503, never a 500.

Expected input errors are handled where they arise (decode -> quarantine, size -> 413);
this catches only bugs and environment failures. 503 with Retry-After makes 360dialog
redeliver later, which is right when nothing was stored.
"""

from __future__ import annotations

import logging

from app.asgi_types import ASGIApp, Message, Receive, Scope, Send, respond

logger = logging.getLogger(__name__)


class ErrorGuard:
    def __init__(self, app: ASGIApp, retry_after_s: int) -> None:
        self.app = app
        self.retry_after = str(retry_after_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception(
                "unexpected error answering %s %s",
                scope.get("method"),
                scope.get("path"),
                extra={"action": "request_failed"},
            )
            if not started:
                await respond(
                    send,
                    503,
                    b"internal error, retry later\n",
                    [(b"retry-after", self.retry_after)],
                )
