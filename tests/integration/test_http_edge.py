"""Hostile and broken clients against a real server, over raw sockets where an HTTP client
library would refuse to send the request. Each limit is tried at the limit and just past it.

Every loop is bounded in count and time; timing bounds are generous (a slow CI machine must
not fail them), since what is tested is "answered" versus "held forever".
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.corpus import cloud_text

pytestmark = pytest.mark.anyio

RECV_TIMEOUT = 20.0  # seconds a raw socket waits for an answer before the test fails


@contextmanager
def raw(base: str) -> Iterator[socket.socket]:
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=RECV_TIMEOUT)
    try:
        yield sock
    finally:
        sock.close()


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the timeout)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if len(data) > 1 << 20:
            raise AssertionError("more than 1 MiB of response")
    return data


def read_one_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    response_head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", response_head)
    while length and len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return response_head + b"\r\n\r\n" + body


def head(method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _requests_stored(db: asyncpg.Connection, channel: str) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM wabahook_requests WHERE channel = $1", channel)
    )


# --- upgrades ---------------------------------------------------------------------------------


async def test_an_h2c_upgrade_post_is_refused_and_nothing_is_stored(
    server: str, db: asyncpg.Connection
) -> None:
    body = cloud_text("wamid.h2c")
    request = head(
        "POST",
        "/webhook/h2c",
        [
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ],
    )
    with raw(server) as sock:
        sock.sendall(request + body)
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in response
    assert await _requests_stored(db, "h2c") == 0
    async with httpx.AsyncClient(base_url=server) as client:  # the same body, plainly
        assert (await client.post("/webhook/h2c", content=body)).status_code == 200
    assert await _requests_stored(db, "h2c") == 1


async def test_a_websocket_handshake_is_a_client_error(server: str) -> None:
    request = head(
        "GET",
        "/webhook/ws",
        [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ],
    )
    with raw(server) as sock:
        sock.sendall(request)
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 400 ")


# --- bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deeply_nested_json_is_kept_raw_as_quarantined(
    server: str, db: asyncpg.Connection, depth: int
) -> None:
    body = b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    async with httpx.AsyncClient(base_url=server) as client:
        response = await client.post("/webhook/deep", content=body)
    assert response.status_code == 200
    row = await db.fetchrow("SELECT outcome, body FROM wabahook_requests WHERE channel = 'deep'")
    assert row["outcome"] == "quarantined"
    assert row["body"] == body


@pytest.mark.parametrize(("declared_past_cap", "status"), [(0, b"100"), (1, b"413")])
async def test_a_declared_length_past_the_cap_is_413_before_any_100_continue(
    server_factory: Callable[..., str], database_url: str, declared_past_cap: int, status: bytes
) -> None:
    base = server_factory(database_url, max_body=1000)
    request = head(
        "POST",
        "/webhook/expect",
        [("content-length", str(1000 + declared_past_cap)), ("expect", "100-continue")],
    )
    with raw(base) as sock:
        sock.sendall(request)  # and nothing more: the answer must not wait for the body
        first = read_one_response(sock)
    assert first.startswith(b"HTTP/1.1 " + status + b" ")


# --- heads ------------------------------------------------------------------------------------


def _padded_head(path: str, size: int) -> bytes:
    """A GET whose target plus header names and values are exactly `size` bytes."""
    fixed = len(path) + len("host") + len("127.0.0.1") + len("x-pad")
    return head("GET", path, [("x-pad", "a" * (size - fixed))])


@pytest.mark.parametrize(("size", "status"), [(4096, b"200"), (4097, b"431")])
async def test_head_size_at_and_past_the_limit(
    server_factory: Callable[..., str], database_url: str, size: int, status: bytes
) -> None:
    base = server_factory(database_url, max_header_bytes=4096)
    with raw(base) as sock:
        sock.sendall(_padded_head("/healthz", size))
        assert read_one_response(sock).startswith(b"HTTP/1.1 " + status + b" ")


@pytest.mark.parametrize(("count", "status"), [(20, b"200"), (21, b"431")])
async def test_header_count_at_and_past_the_limit(
    server_factory: Callable[..., str], database_url: str, count: int, status: bytes
) -> None:
    base = server_factory(database_url, max_headers=20)
    extra = [(f"x-{i}", "v") for i in range(count - 1)]  # plus host
    with raw(base) as sock:
        sock.sendall(head("GET", "/healthz", extra))
        assert read_one_response(sock).startswith(b"HTTP/1.1 " + status + b" ")


async def test_an_endless_header_is_cut_and_other_clients_are_served_meanwhile(
    server: str, db: asyncpg.Connection
) -> None:
    with raw(server) as sock:
        sock.sendall(b"POST /webhook/endless HTTP/1.1\r\nhost: 127.0.0.1\r\nx-endless: ")
        sent = 0
        answer = b""
        async with httpx.AsyncClient(base_url=server, timeout=10) as client:
            started = time.monotonic()
            try:
                while sent < 256 << 20:  # far past the limit; the server must cut it long before
                    sock.sendall(b"a" * 65536)
                    sent += 65536
            except OSError:  # reset by the server once it answered and closed
                pass
            response = await client.post("/webhook/other", content=cloud_text("wamid.e1"))
            assert response.status_code == 200
            assert time.monotonic() - started < 15
        try:
            answer = sock.recv(65536)
        except OSError:
            answer = b""
    assert sent < 64 << 20, "the server read a 64 MiB header without cutting it"
    # The 431 may be lost to the reset of a client still sending; the cut is what matters.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    assert await _requests_stored(db, "endless") == 0


async def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout(
    server_factory: Callable[..., str], database_url: str
) -> None:
    base = server_factory(database_url, header_timeout_s=0.5)
    with raw(base) as sock:
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed, with nothing to answer
        assert time.monotonic() - started < RECV_TIMEOUT


async def test_a_dripping_head_is_answered_408_and_closed(
    server_factory: Callable[..., str], database_url: str
) -> None:
    base = server_factory(database_url, header_timeout_s=0.5)
    with raw(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")  # and never the end
        assert read_response(sock).startswith(b"HTTP/1.1 408 ")


async def test_a_head_in_pieces_within_the_timeout_is_served(
    server_factory: Callable[..., str], database_url: str
) -> None:
    base = server_factory(database_url, header_timeout_s=5.0)
    with raw(base) as sock:
        for piece in (b"GET /heal", b"thz HTTP/1.1\r\nhost: 127", b".0.0.1\r\n", b"\r\n"):
            sock.sendall(piece)
            await asyncio.sleep(0)  # separate writes, not a timing condition
        assert read_one_response(sock).startswith(b"HTTP/1.1 200 ")


async def test_keep_alive_requests_each_get_a_head_timeout_of_their_own(
    server_factory: Callable[..., str], database_url: str
) -> None:
    base = server_factory(database_url, header_timeout_s=0.5, timeout_keep_alive=30)
    with raw(base) as sock:
        sock.sendall(head("GET", "/healthz", []))
        assert read_one_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the second request's head never ends
        assert read_response(sock).startswith(b"HTTP/1.1 408 ")


# --- one sender against everyone else ---------------------------------------------------------


@pytest.mark.parametrize(("events", "outcome"), [(5, "stored"), (6, "too_many_events")])
async def test_events_per_body_at_and_past_the_limit(
    server_factory: Callable[..., str],
    database_url: str,
    db: asyncpg.Connection,
    events: int,
    outcome: str,
) -> None:
    base = server_factory(database_url, max_events=5)
    statuses = ",".join(
        f'{{"id":"wamid.m{i}","status":"sent","timestamp":"1780000000","recipient_id":"49"}}'
        for i in range(events)
    )
    body = f'{{"statuses":[{statuses}]}}'.encode()
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.post("/webhook/many", content=body)).status_code == 200
    row = await db.fetchrow("SELECT outcome, events, body FROM wabahook_requests")
    assert (row["outcome"], row["body"]) == (outcome, body)
    stored = await db.fetchval("SELECT count(*) FROM wabahook_events")
    assert stored == (events if outcome == "stored" else 0)


async def test_a_channel_past_its_byte_budget_gets_503_and_others_do_not(
    server_factory: Callable[..., str], database_url: str, db: asyncpg.Connection
) -> None:
    body = cloud_text("wamid.b1")
    # Room for exactly two bodies, refilled at one byte a second: the third must wait.
    base = server_factory(
        database_url,
        max_body=len(body),
        channel_burst_bytes=2 * len(body),
        channel_bytes_per_s=1.0,
        retry_after_s=1,
    )
    async with httpx.AsyncClient(base_url=base) as client:
        first = await client.post("/webhook/greedy", content=body)
        second = await client.post("/webhook/greedy", content=cloud_text("wamid.b2"))
        third = await client.post("/webhook/greedy", content=cloud_text("wamid.b3"))
        other = await client.post("/webhook/modest", content=cloud_text("wamid.b4"))
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 503]
    assert int(third.headers["retry-after"]) >= len(body) - 1  # a body's worth at 1 byte/s
    assert other.status_code == 200
    assert await _requests_stored(db, "greedy") == 2
