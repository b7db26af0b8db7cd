"""The user's app as the dispatcher sees it: an HTTP server on 127.0.0.1 in the test's event
loop that records every request and answers as the test tells it (`answer`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.waiting import wait_until


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int  # what the receiver answered (0: it never answered)
    at: float  # time.monotonic() at arrival

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer: the dispatcher's timeout ends the attempt


Rule = Callable[[dict[str, str], bytes], Answer | Awaitable[Answer]]


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answer: Rule = lambda headers, body: Answer()
        self.url = ""
        self._never = asyncio.Event()  # what a hanging answer waits for, set at the end

    @property
    def accepted(self) -> list[Received]:
        """The requests answered 2xx, in the order they arrived."""
        return [r for r in self.received if 200 <= r.status < 300]

    async def wait_accepted(self, count: int, timeout: float = 60.0) -> list[Received]:
        async def enough() -> bool:
            return len(self.accepted) >= count

        await wait_until(enough, timeout=timeout, what=f"{count} requests accepted downstream")
        return self.accepted

    async def _handle(self, request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        body = await request.read()
        at = time.monotonic()
        answer = self.answer(headers, body)
        if not isinstance(answer, Answer):
            answer = await answer
        if answer.hang:
            self.received.append(Received(headers, body, 0, at))
            await self._never.wait()
        self.received.append(Received(headers, body, answer.status, at))
        return web.Response(status=answer.status, headers=answer.headers)


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A running receiver on a free loopback port; stopped afterwards."""
    receiver = Receiver()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", receiver._handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    port = server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        receiver._never.set()
        await runner.cleanup()
