"""Read the whole body once, never buffering more than the cap: 413 past it, and 408 for a
client that takes longer than the read timeout to send it (a slow-body attack holds no
worker for long).

A declared Content-Length over the cap is answered before a byte of the body is read, and so
before uvicorn would send `100 Continue`. A chunked body is refused as soon as it passes the
cap. Either way the connection is closed: what the client still sends is not read.
"""

from __future__ import annotations

import asyncio

from app.asgi_types import ASGIApp, Message, Receive, Scope, Send, respond


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body: int, read_timeout: float) -> None:
        self.app = app
        self.max_body = max_body
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_body:
                    await self._too_large(send)
                    return
                break
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # nobody is left to answer, and nothing was acknowledged
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await self._too_large(send)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            text = f"body not received within {self.read_timeout:g} s\n".encode()
            await respond(send, 408, text, [(b"connection", b"close")])
            return
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        await self.app(scope, replay_body(body, receive), send)

    async def _too_large(self, send: Send) -> None:
        text = f"body larger than {self.max_body} bytes\n".encode()
        await respond(send, 413, text, [(b"connection", b"close")])


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the inner app the body already read, then the real stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
