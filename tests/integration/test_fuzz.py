"""Property-based fuzzing of the ASGI app itself: bodies, headers, paths and methods.

Never a 500, never an exception escaping the app, and every body answered 200 on the
webhook route is stored, byte for byte, with an outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.asgi import build_app
from app.asgi_types import ASGIApp, Message
from app.config import Config
from tests.corpus import CASES
from tests.support.databases import fresh_database

MAX_BODY = 64 * 1024


class Harness:
    """The app with its lifespan started, driven directly on one event loop."""

    def __init__(self, app: ASGIApp, database_url: str) -> None:
        self.app = app
        self.database_url = database_url
        self.loop = asyncio.new_event_loop()
        self.lifespan_in: asyncio.Queue[Message] = asyncio.Queue()
        self.lifespan_out: asyncio.Queue[Message] = asyncio.Queue()
        self.lifespan: asyncio.Task[None] | None = None
        self.db: asyncpg.Connection | None = None

    def start(self) -> None:
        async def begin() -> None:
            scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
            self.lifespan = asyncio.create_task(
                self.app(scope, self.lifespan_in.get, self.lifespan_out.put)
            )
            await self.lifespan_in.put({"type": "lifespan.startup"})
            assert (await self.lifespan_out.get())["type"] == "lifespan.startup.complete"
            self.db = await asyncpg.connect(self.database_url)

        self.loop.run_until_complete(begin())

    def stop(self) -> None:
        async def end() -> None:
            assert self.db is not None and self.lifespan is not None
            await self.db.close()
            await self.lifespan_in.put({"type": "lifespan.shutdown"})
            assert (await self.lifespan_out.get())["type"] == "lifespan.shutdown.complete"
            await self.lifespan

        self.loop.run_until_complete(end())
        self.loop.close()

    def request(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
    ) -> tuple[int, bytes]:
        async def call() -> tuple[int, bytes]:
            incoming: list[Message] = [
                {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
                for i, chunk in enumerate(chunks)
            ] or [{"type": "http.request", "body": b"", "more_body": False}]
            sent: list[Message] = []

            async def receive() -> Message:
                if incoming:
                    return incoming.pop(0)
                await asyncio.Event().wait()  # like a client that stays connected
                raise AssertionError("unreachable")

            async def send(message: Message) -> None:
                sent.append(message)

            scope: dict[str, Any] = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "path": path,
                "raw_path": path.encode(errors="replace"),
                "query_string": b"",
                "headers": headers,
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 8000),
                "scheme": "http",
                "root_path": "",
            }
            await self.app(scope, receive, send)
            assert sent[0]["type"] == "http.response.start"
            return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

        return self.loop.run_until_complete(call())

    def stored_bodies(self, channel: str) -> list[tuple[bytes, str]]:
        assert self.db is not None
        rows = self.loop.run_until_complete(
            self.db.fetch(
                "SELECT body, outcome FROM wabahook_requests WHERE channel = $1"
                " ORDER BY received_at, id",
                channel,
            )
        )
        return [(bytes(row["body"]), row["outcome"]) for row in rows]


@pytest.fixture(scope="module")
def harness(
    server_dsn: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    with fresh_database(server_dsn, template_database) as url:
        data_dir = Path(tmp_path_factory.mktemp("fuzz"))
        config = Config(database_url=url, data_dir=str(data_dir), max_body=MAX_BODY)
        harness = Harness(build_app(config), url)
        harness.start()
        yield harness
        harness.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "object",
                    "entry",
                    "changes",
                    "value",
                    "field",
                    "messages",
                    "statuses",
                    "errors",
                    "contacts",
                    "id",
                    "type",
                    "from",
                    "timestamp",
                    "metadata",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)
# Corpus bodies up to 8 KiB: hypothesis prints every example, and the corpus's large bodies
# (tested end to end in test_ingest) would make that a warning, an error here.
corpus_bodies = st.sampled_from([case.body for case in CASES if len(case.body) <= 8192])
# Nesting deeper than the decoder follows, at any depth around its limit.
nested_bodies = st.integers(1, 5000).map(lambda d: b'{"messages":' + b"[" * d + b"]" * d + b"}")
# Around the default limit of events per body.
many_statuses = st.integers(990, 1010).map(
    lambda n: b'{"statuses":[' + b",".join([b'{"id":"wamid.x","status":"sent"}'] * n) + b"]}"
)
bodies = (
    st.binary(max_size=2048)
    | nested_bodies
    | many_statuses
    | json_values.map(lambda value: json.dumps(value).encode())
    | corpus_bodies
    | corpus_bodies.flatmap(lambda body: st.integers(0, len(body)).map(lambda cut: body[:cut]))
)
header_names = st.sampled_from(
    [b"content-type", b"content-length", b"authorization", b"x-hub-signature-256", b"x-junk"]
)
headers = st.lists(st.tuples(header_names, st.binary(max_size=40)), max_size=4)
paths = st.sampled_from(["/webhook", "/webhook/fuzz", "/healthz", "/readyz", "/", "/webhook/"]) | (
    st.text(max_size=30).map(lambda text: "/" + text)
)
methods = st.sampled_from(["POST", "GET", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "BREW"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=methods, path=paths, headers=headers, body=bodies, chunk=st.integers(1, 4096))
def test_no_input_gets_a_500_or_escapes(
    harness: Harness,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    chunk: int,
) -> None:
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    status, _ = harness.request(method, path, headers, chunks)
    assert status in (200, 404, 405, 413), status


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_every_acknowledged_body_is_stored_raw(harness: Harness, body: bytes) -> None:
    before = len(harness.stored_bodies("fuzz-stored"))
    status, _ = harness.request("POST", "/webhook/fuzz-stored", [], [body])
    assert status == 200
    stored = harness.stored_bodies("fuzz-stored")
    assert len(stored) == before + 1
    assert stored[-1][0] == body
    assert stored[-1][1] in ("stored", "unknown", "quarantined", "too_many_events")
