"""The ASGI layer in process: routing, BodyLimit and ErrorGuard, with no server and no database.

In the style of Starlette's own middleware tests: a tiny ASGI app is built inline and driven
through `httpx.ASGITransport`, or with hand-written `receive`/`send` where httpx cannot say
what the case needs (a body that never arrives, a client that leaves mid-body).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from app.asgi import DEFAULT_CHANNEL, Wabahook, build_app
from app.asgi_types import ASGIApp, Message, Receive, Scope, Send, respond
from app.body_limit import BodyLimit
from app.config import Config
from app.error_guard import ErrorGuard
from app.request_metrics import RequestMetrics

pytestmark = pytest.mark.anyio

BASE_URL = "http://testserver"
CAP = 1024  # the BodyLimit cap the echo tests use
GUARD = 5.0  # seconds a hand-driven call may take before the test fails rather than hangs


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


def http_scope(
    method: str = "POST", path: str = "/", headers: list[tuple[bytes, bytes]] | None = None
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers or [],
    }


class Sent:
    """A hand-written `send` that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def starts(self) -> list[Message]:
        return [m for m in self.messages if m["type"] == "http.response.start"]

    @property
    def status(self) -> int:
        (start,) = self.starts
        return int(start["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        (start,) = self.starts
        return dict(start["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m["body"] for m in self.messages if m["type"] == "http.response.body")


def scripted_receive(*messages: Message) -> tuple[Receive, list[int], asyncio.Event]:
    """A `receive` that returns the messages in order, then blocks on an event nobody sets.

    Returns the callable, a one-element call counter, and the event (for tests that never
    set it: the block is the point).
    """
    calls = [0]
    never = asyncio.Event()
    queue = list(messages)

    async def receive() -> Message:
        calls[0] += 1
        if queue:
            return queue.pop(0)
        await never.wait()
        raise AssertionError("unreachable: the event is never set")

    return receive, calls, never


def chunk(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


class Echo:
    """An inner app that answers 200 with the exact body it received, and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        parts: list[bytes] = []
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await respond(send, 200, b"".join(parts))


class Recorder:
    """An inner app that keeps the scopes it was called with and answers 204."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(dict(scope))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    """An async generator body: httpx sends it chunked, with no Content-Length."""
    for part in parts:
        yield part


async def bounded(call: Awaitable[None]) -> None:
    """Await a hand-driven ASGI call; a regression that hangs fails instead of stalling."""
    await asyncio.wait_for(call, GUARD)


# --- routing ---------------------------------------------------------------------------------


@pytest.fixture
def wabahook() -> Wabahook:
    """The router with no lifespan run (so no service, no database) and a recording webhook."""
    app = Wabahook(Config())
    app._webhook = Recorder()
    return app


NOT_FOUND = [
    "/",
    "/webhooks",
    "/webhookx",
    "/webhook-a",
    "/healthz/",
    "/readyz/x",
    "/HEALTHZ",
    "/Webhook",
    "/webhook/",  # names no channel: only the bare path is the default one
    "/webhook/" + "a" * 65,  # one past the 64-character limit
    "/webhook/" + "A" + "0" * 64,
    "/webhook/.abc",  # must start with a letter or digit
    "/webhook/-abc",
    "/webhook/_abc",
    "/webhook/~abc",
    "/webhook/a b",
    "/webhook/a%20b",  # decoded to a space
    "/webhook/a/b",
    "/webhook/a%2Fb",  # decoded to a slash
    "/webhook//a",
    "/webhook/a:b",
    "/webhook/a+b",
    "/webhook/caf%C3%A9",  # non-ASCII
    "/webhook/a%00",
]


@pytest.mark.parametrize("path", NOT_FOUND)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_unknown_paths_and_bad_channels_are_404(
    wabahook: Wabahook, path: str, method: str
) -> None:
    async with client(wabahook) as c:
        response = await c.request(method, path)
    assert response.status_code == 404
    assert response.text == "not found\n"
    assert "allow" not in response.headers
    assert isinstance(wabahook._webhook, Recorder)
    assert wabahook._webhook.scopes == []


@pytest.mark.parametrize("path", ["/webhook/.", "/webhook/.."])
async def test_dot_channels_are_404(wabahook: Wabahook, path: str) -> None:
    # httpx would resolve these dot segments away, so they go in a raw scope.
    sent = Sent()
    receive, _, _ = scripted_receive(chunk(b"{}", False))
    await bounded(wabahook(http_scope("POST", path), receive, sent))
    assert sent.status == 404
    assert isinstance(wabahook._webhook, Recorder)
    assert wabahook._webhook.scopes == []


CHANNELS = [
    "a",
    "0",
    "Z",
    "a" * 64,  # exactly the limit
    "A" + "0" * 63,
    "de-munich",
    "shop.de",
    "a_b~c-d.e",
    "9.-_~",
]


@pytest.mark.parametrize("channel", CHANNELS)
async def test_post_to_a_channel_reaches_the_webhook_with_its_label(
    wabahook: Wabahook, channel: str
) -> None:
    async with client(wabahook) as c:
        response = await c.post(f"/webhook/{channel}", content=b"{}")
    assert response.status_code == 204
    assert isinstance(wabahook._webhook, Recorder)
    (scope,) = wabahook._webhook.scopes
    assert scope["wabahook.channel"] == channel
    assert scope["path"] == f"/webhook/{channel}"


async def test_bare_webhook_is_the_default_channel(wabahook: Wabahook) -> None:
    async with client(wabahook) as c:
        response = await c.post("/webhook", content=b"{}")
    assert response.status_code == 204
    assert isinstance(wabahook._webhook, Recorder)
    (scope,) = wabahook._webhook.scopes
    assert scope["wabahook.channel"] == DEFAULT_CHANNEL == "default"


# (method, path, the Allow header of its 405): every other method on a webhook and a probe.
WRONG_METHODS = [
    *(
        (method, path, "POST")
        for path in ["/webhook", "/webhook/shop", "/webhook/" + "a" * 64]
        for method in ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]
    ),
    *(
        (method, path, "GET, HEAD")
        for path in ["/healthz", "/readyz"]
        for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    ),
]


@pytest.mark.parametrize(("method", "path", "allow"), WRONG_METHODS)
async def test_wrong_method_is_405_with_the_routes_allow(
    wabahook: Wabahook, method: str, path: str, allow: str
) -> None:
    async with client(wabahook) as c:
        response = await c.request(method, path)
    assert response.status_code == 405
    assert response.headers.get_list("allow") == [allow]
    assert isinstance(wabahook._webhook, Recorder)
    assert wabahook._webhook.scopes == []


async def test_bad_channel_with_wrong_method_is_404_not_405(wabahook: Wabahook) -> None:
    async with client(wabahook) as c:
        response = await c.get("/webhook/-bad")
    assert response.status_code == 404
    assert "allow" not in response.headers


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_healthz_answers_200(wabahook: Wabahook, method: str) -> None:
    async with client(wabahook) as c:
        response = await c.request(method, "/healthz")
    assert response.status_code == 200
    assert response.headers["content-length"] == "3"
    if method == "GET":
        assert response.text == "ok\n"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_readyz_before_startup_is_503_starting(wabahook: Wabahook, method: str) -> None:
    assert wabahook.service is None
    async with client(wabahook) as c:
        response = await c.request(method, "/readyz")
    assert response.status_code == 503
    assert response.headers["content-length"] == str(len(b"starting\n"))
    if method == "GET":
        assert response.text == "starting\n"


async def test_websocket_handshake_is_refused(wabahook: Wabahook) -> None:
    # A close before accept: the server refuses the handshake (uvicorn answers 403).
    sent = Sent()
    receive, calls, _ = scripted_receive({"type": "websocket.connect"})
    await bounded(wabahook({"type": "websocket", "path": "/webhook"}, receive, sent))
    assert sent.messages == [{"type": "websocket.close", "code": 1008}]
    assert calls == [1]


async def test_real_webhook_stack_limits_the_body_before_ingest() -> None:
    # The route's own BodyLimit answers 413 without ever reaching _ingest (which needs the
    # service), so this is safe with no lifespan run.
    app = Wabahook(Config(max_body=16))
    async with client(app) as c:
        at_cap_plus_one = await c.post("/webhook/shop", content=b"x" * 17)
    assert at_cap_plus_one.status_code == 413
    assert app.service is None


async def test_build_app_guards_the_router_with_the_configured_retry_after() -> None:
    counted = build_app(Config(retry_after_s=9))
    assert isinstance(counted, RequestMetrics)  # outermost, so it counts the guard's 503 too
    guard = counted.app
    assert isinstance(guard, ErrorGuard)
    assert isinstance(guard.app, Wabahook)

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    guard.app._webhook = broken
    async with client(counted) as c:
        response = await c.post("/webhook", content=b"{}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "9"


# --- BodyLimit -------------------------------------------------------------------------------


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def limited(echo: Echo) -> BodyLimit:
    return BodyLimit(echo, CAP, read_timeout=GUARD)


BODIES = {
    "empty": b"",
    "one": b"\x00",
    "at_cap": bytes(range(256)) * (CAP // 256),
}
assert len(BODIES["at_cap"]) == CAP


@pytest.mark.parametrize("name", list(BODIES))
async def test_body_within_cap_passes_byte_for_byte(
    limited: BodyLimit, echo: Echo, name: str
) -> None:
    body = BODIES[name]
    async with client(limited) as c:
        response = await c.post("/", content=body)
    assert response.status_code == 200
    assert response.content == body
    assert echo.calls == 1


async def test_chunked_body_at_cap_passes_byte_for_byte(limited: BodyLimit, echo: Echo) -> None:
    body = bytes(range(256)) * (CAP // 256)
    parts = [body[i : i + 100] for i in range(0, CAP, 100)]
    async with client(limited) as c:
        response = await c.post("/", content=stream(*parts))
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 200
    assert response.content == body
    assert echo.calls == 1


async def test_one_byte_past_cap_with_content_length_is_413(limited: BodyLimit, echo: Echo) -> None:
    async with client(limited) as c:
        response = await c.post("/", content=b"x" * (CAP + 1))
    assert response.request.headers["content-length"] == str(CAP + 1)
    assert response.status_code == 413
    assert response.text == f"body larger than {CAP} bytes\n"
    assert response.headers["connection"] == "close"
    assert echo.calls == 0


async def test_one_byte_past_cap_chunked_is_413(limited: BodyLimit, echo: Echo) -> None:
    async with client(limited) as c:
        response = await c.post("/", content=stream(b"x" * CAP, b"y", b"z" * 500))
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert echo.calls == 0


async def test_chunked_past_cap_in_a_final_chunk_is_413(echo: Echo) -> None:
    # The byte past the cap arrives in the last message (more_body False).
    sent = Sent()
    receive, calls, _ = scripted_receive(chunk(b"x" * CAP, True), chunk(b"y", False))
    await bounded(BodyLimit(echo, CAP, GUARD)(http_scope(), receive, sent))
    assert sent.status == 413
    assert calls == [2]
    assert echo.calls == 0


@pytest.mark.parametrize("value", [b"abc", b"", b"-1", b"+5", b" 5", b"5 ", b"1e3", b"0x10"])
async def test_non_digit_content_length_is_413(echo: Echo, value: bytes) -> None:
    sent = Sent()
    receive, _, _ = scripted_receive(chunk(b"hello", False))
    scope = http_scope(headers=[(b"content-length", value)])
    await bounded(BodyLimit(echo, CAP, GUARD)(scope, receive, sent))
    assert sent.status == 413
    assert sent.headers[b"connection"] == b"close"
    assert echo.calls == 0


async def test_non_digit_content_length_through_httpx_is_413(
    limited: BodyLimit, echo: Echo
) -> None:
    async with client(limited) as c:
        response = await c.post("/", content=b"hello", headers={"content-length": "five"})
    assert response.status_code == 413
    assert echo.calls == 0


@pytest.mark.parametrize(("declared", "status"), [(CAP, 200), (CAP + 1, 413)])
async def test_declared_content_length_at_and_past_cap(
    echo: Echo, declared: int, status: int
) -> None:
    # A declared length past the cap is refused before reading a byte of it.
    body = b"x" * CAP
    sent = Sent()
    receive, _, _ = scripted_receive(chunk(body, False))
    scope = http_scope(headers=[(b"content-length", str(declared).encode())])
    await bounded(BodyLimit(echo, CAP, GUARD)(scope, receive, sent))
    assert sent.status == status
    assert echo.calls == (1 if status == 200 else 0)
    if status == 200:
        assert sent.body == body


async def test_empty_body_without_content_length_passes(limited: BodyLimit, echo: Echo) -> None:
    sent = Sent()
    receive, calls, _ = scripted_receive({"type": "http.request"})  # no body, no more_body
    await bounded(limited(http_scope(), receive, sent))
    assert sent.status == 200
    assert sent.body == b""
    assert echo.calls == 1
    assert calls == [1]


async def test_inner_app_gets_the_real_stream_after_the_body(echo: Echo) -> None:
    # After the replayed body, the inner app's next receive goes to the client stream.
    seen: list[Message] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append(await receive())
        await respond(send, 200, b"")

    sent = Sent()
    receive, _, _ = scripted_receive(
        chunk(b"ab", True), chunk(b"cd", False), {"type": "http.disconnect"}
    )
    await bounded(BodyLimit(inner, CAP, GUARD)(http_scope(), receive, sent))
    assert seen == [chunk(b"abcd", False), {"type": "http.disconnect"}]
    assert sent.status == 200


async def test_body_that_never_arrives_is_408(echo: Echo) -> None:
    sent = Sent()
    receive, calls, never = scripted_receive()
    await bounded(BodyLimit(echo, CAP, read_timeout=0.05)(http_scope(), receive, sent))
    assert not never.is_set()
    assert calls == [1]
    assert sent.status == 408
    assert sent.body == b"body not received within 0.05 s\n"
    assert sent.headers[b"connection"] == b"close"
    assert sent.headers[b"content-length"] == str(len(sent.body)).encode()
    assert echo.calls == 0


async def test_body_that_stalls_midway_is_408(echo: Echo) -> None:
    sent = Sent()
    receive, calls, _ = scripted_receive(chunk(b"x" * 10, True))
    await bounded(BodyLimit(echo, CAP, read_timeout=0.05)(http_scope(), receive, sent))
    assert calls == [2]
    assert sent.status == 408
    assert echo.calls == 0


async def test_body_that_arrives_in_time_is_not_408(echo: Echo) -> None:
    # The same short read timeout, with every message ready: the body passes.
    sent = Sent()
    receive, _, _ = scripted_receive(chunk(b"x" * 10, True), chunk(b"y", False))
    await bounded(BodyLimit(echo, CAP, read_timeout=0.05)(http_scope(), receive, sent))
    assert sent.status == 200
    assert sent.body == b"x" * 10 + b"y"
    assert echo.calls == 1


@pytest.mark.parametrize(
    "before",
    [[], [chunk(b"x" * 10, True)], [chunk(b"x" * 10, True), chunk(b"y" * 10, True)]],
    ids=["at_start", "after_one_chunk", "after_two_chunks"],
)
async def test_disconnect_mid_body_sends_nothing(echo: Echo, before: list[Message]) -> None:
    sent = Sent()
    receive, calls, _ = scripted_receive(*before, {"type": "http.disconnect"})
    await bounded(BodyLimit(echo, CAP, GUARD)(http_scope(), receive, sent))
    assert sent.messages == []
    assert echo.calls == 0
    assert calls == [len(before) + 1]


@pytest.mark.parametrize("declared", [CAP + 1, 10**12])
async def test_declared_oversize_is_413_before_reading_a_byte(echo: Echo, declared: int) -> None:
    # Not a single receive: uvicorn sends `100 Continue` only on the app's first receive,
    # and a client that declares too much and then sends nothing is answered at once.
    sent = Sent()
    receive, calls, _ = scripted_receive()
    scope = http_scope(headers=[(b"content-length", str(declared).encode())])
    await bounded(BodyLimit(echo, CAP, GUARD)(scope, receive, sent))
    assert calls == [0]
    assert sent.status == 413
    assert sent.headers[b"connection"] == b"close"
    assert echo.calls == 0


async def test_chunked_oversize_is_413_without_reading_on(echo: Echo) -> None:
    # An endless chunked stream: answered at the first chunk past the cap, not drained.
    calls = [0]

    async def endless() -> Message:
        calls[0] += 1
        return chunk(b"x" * (CAP // 2), True)

    sent = Sent()
    await bounded(BodyLimit(echo, CAP, GUARD)(http_scope(), endless, sent))
    assert calls == [3]
    assert sent.status == 413
    assert echo.calls == 0


async def test_non_http_scopes_pass_through_body_limit() -> None:
    got: list[tuple[Scope, Receive, Send]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        got.append((scope, receive, send))

    receive, calls, _ = scripted_receive()
    sent = Sent()
    scope: Scope = {"type": "lifespan"}
    await bounded(BodyLimit(inner, CAP, GUARD)(scope, receive, sent))
    assert got == [(scope, receive, sent)]
    assert got[0][0] is scope
    assert calls == [0]


# --- ErrorGuard ------------------------------------------------------------------------------

RETRY_AFTER = 17


def raising(
    before: Callable[[Send], Awaitable[None]] | None = None,
) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if before is not None:
            await before(send)
        raise RuntimeError("boom")

    return app


async def test_error_before_response_is_503_with_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = ErrorGuard(raising(), RETRY_AFTER)
    with caplog.at_level(logging.ERROR, logger="app.error_guard"):
        async with client(guard) as c:
            response = await c.post("/webhook/shop", content=b"{}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER)
    assert response.text == "internal error, retry later\n"
    (record,) = [r for r in caplog.records if r.name == "app.error_guard"]
    assert record.levelno == logging.ERROR
    assert getattr(record, "action", None) == "request_failed"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert "POST /webhook/shop" in record.getMessage()


async def test_error_after_response_start_sends_no_second_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def start(send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    guard = ErrorGuard(raising(start), RETRY_AFTER)
    sent = Sent()
    receive, _, _ = scripted_receive(chunk(b"", False))
    with caplog.at_level(logging.ERROR, logger="app.error_guard"):
        await bounded(guard(http_scope(), receive, sent))  # the exception does not escape
    # Only the inner app's start: no 503 start after it, and no body (the server closes the
    # connection on an unfinished response).
    assert sent.messages == [{"type": "http.response.start", "status": 200, "headers": []}]
    (record,) = [r for r in caplog.records if r.name == "app.error_guard"]
    assert getattr(record, "action", None) == "request_failed"


async def test_error_after_complete_response_sends_nothing_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def complete(send: Send) -> None:
        await respond(send, 200, b"ok\n")

    guard = ErrorGuard(raising(complete), RETRY_AFTER)
    with caplog.at_level(logging.ERROR, logger="app.error_guard"):
        async with client(guard) as c:
            response = await c.get("/")
    assert response.status_code == 200
    assert response.text == "ok\n"
    actions = [getattr(r, "action", None) for r in caplog.records if r.name == "app.error_guard"]
    assert actions == ["request_failed"]


async def test_successful_response_passes_through_error_guard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    echo = Echo()
    with caplog.at_level(logging.DEBUG, logger="app.error_guard"):
        async with client(ErrorGuard(echo, RETRY_AFTER)) as c:
            response = await c.post("/", content=b"hello")
    assert response.status_code == 200
    assert response.content == b"hello"
    assert "retry-after" not in response.headers
    assert [r for r in caplog.records if r.name == "app.error_guard"] == []


async def test_cancellation_is_not_swallowed() -> None:
    async def cancelled(scope: Scope, receive: Receive, send: Send) -> None:
        raise asyncio.CancelledError

    sent = Sent()
    receive, _, _ = scripted_receive()
    with pytest.raises(asyncio.CancelledError):
        await ErrorGuard(cancelled, RETRY_AFTER)(http_scope(), receive, sent)
    assert sent.messages == []


async def test_lifespan_passes_through_error_guard_untouched() -> None:
    got: list[tuple[Scope, Receive, Send]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        got.append((scope, receive, send))
        message = await receive()
        assert message == {"type": "lifespan.startup"}
        await send({"type": "lifespan.startup.complete"})

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    receive, _, _ = scripted_receive({"type": "lifespan.startup"})
    sent = Sent()
    await bounded(ErrorGuard(inner, RETRY_AFTER)(scope, receive, sent))
    ((s, r, w),) = got
    assert s is scope
    assert r is receive
    assert w is sent  # not wrapped in the tracking send
    assert sent.messages == [{"type": "lifespan.startup.complete"}]


async def test_lifespan_errors_are_not_turned_into_responses() -> None:
    scope: Scope = {"type": "lifespan"}
    receive, _, _ = scripted_receive()
    sent = Sent()
    with pytest.raises(RuntimeError, match="boom"):
        await ErrorGuard(raising(), RETRY_AFTER)(scope, receive, sent)
    assert sent.messages == []
