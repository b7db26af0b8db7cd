"""End to end: real uvicorn on loopback, real HTTP, real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from app import storage
from app.config import Config
from tests.corpus import CASES, CLOUD_STATUS, Case, cloud_text, onprem_text
from tests.load_client import post_many
from tests.support.databases import connected, fresh_database
from tests.support.servers import running_server

pytestmark = pytest.mark.anyio


def _client(base_url: str, connections: int = 100) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits)


async def _events(db: asyncpg.Connection, channel: str) -> list[tuple[object, ...]]:
    rows = await db.fetch(
        "SELECT channel, kind, type, message_id, wa_id, phone_number_id, user_id, group_id"
        " FROM wabahook_events WHERE channel = $1 ORDER BY request_id, seq",
        channel,
    )
    return [tuple(row) for row in rows]


@pytest.fixture(scope="module")
def corpus_server(
    server_dsn: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """One server and database for the whole corpus; each case posts on a channel of its own."""
    with fresh_database(server_dsn, template_database) as url:
        config = Config(database_url=url, data_dir=str(tmp_path_factory.mktemp("corpus")))
        with running_server(config) as base_url:
            yield base_url, url


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case.name for case in CASES])
async def test_every_corpus_body_is_acknowledged_and_stored(
    index: int, corpus_server: tuple[str, str]
) -> None:
    case, channel = CASES[index], f"case-{index}"
    base_url, database_url = corpus_server
    async with _client(base_url) as client:
        response = await client.post(f"/webhook/{channel}", content=case.body)
    assert response.status_code == 200
    async with connected(database_url) as db:
        request = await db.fetchrow(
            "SELECT channel, outcome, body, sha256, events FROM wabahook_requests"
            " WHERE channel = $1",
            channel,
        )
        stored = await _events(db, channel)
    assert request["outcome"] == case.outcome
    assert bytes(request["body"]) == case.body
    assert bytes(request["sha256"]) == hashlib.sha256(case.body).digest()
    assert stored == _distinct_rows(case, channel)
    assert request["events"] == len(case.events)


# docs/protocol.md §7: the kinds whose events are keyed by their own id.
ID_KINDS = ("message", "status", "echo", "call")


def _distinct_rows(case: Case, channel: str) -> list[tuple[object, ...]]:
    """The expected rows: an event with an id repeated inside one body is stored once."""
    rows, seen = [], set()
    for e in case.events:
        if e.kind in ID_KINDS and e.message_id is not None:
            key = (e.kind, e.message_id, e.type, e.phone_number_id or channel)
            if key in seen:
                continue
            seen.add(key)
        row = (e.kind, e.type, e.message_id, e.wa_id, e.phone_number_id, e.user_id, e.group_id)
        rows.append((channel, *row))
    return rows


async def test_payload_is_the_element_as_received(server: str, db: asyncpg.Connection) -> None:
    body = cloud_text("wamid.payload-1")
    async with _client(server) as client:
        assert (await client.post("/webhook/c", content=body)).status_code == 200
    payload = await db.fetchval("SELECT payload::text FROM wabahook_events")
    message = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]
    assert json.loads(payload) == message
    assert payload.encode() in body  # the bytes themselves, not a re-encoding


async def test_redelivery_stores_no_second_event(server: str, db: asyncpg.Connection) -> None:
    bodies = [cloud_text("wamid.redelivered"), onprem_text("ABGG-redelivered")]
    async with _client(server) as client:
        for body in bodies * 3:
            assert (await client.post("/webhook/c", content=body)).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 2
    assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == 6


async def test_status_progression_is_three_events(server: str, db: asyncpg.Connection) -> None:
    template = json.loads(CLOUD_STATUS)
    async with _client(server) as client:
        for status in ("sent", "delivered", "read", "read"):
            template["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = status
            body = json.dumps(template).encode()
            assert (await client.post("/webhook/c", content=body)).status_code == 200
    types = await db.fetch("SELECT type FROM wabahook_events ORDER BY id")
    assert [row["type"] for row in types] == ["sent", "delivered", "read"]


async def test_a_call_and_an_echo_redelivered_in_other_bodies_are_stored_once(
    server: str, db: asyncpg.Connection
) -> None:
    # One call's connect and terminate and one echo, each redelivered batched differently:
    # the events are keyed by their ids, not by the bytes that carried them (protocol §7).
    connect = {"id": "wacid.1", "from": "4915198765432", "event": "connect", "timestamp": "1"}
    terminate = {**connect, "event": "terminate", "status": "COMPLETED"}
    echo = {"from": "4989123456789", "to": "4915198765432", "id": "wamid.echo", "type": "text"}

    def cloud_change(field: str, **arrays: object) -> bytes:
        value = {"metadata": {"phone_number_id": "190011223344556"}, **arrays}
        change = {"field": field, "value": value}
        entry = {"id": "104455667788990", "changes": [change]}
        return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()

    bodies = [
        cloud_change("calls", calls=[connect]),
        cloud_change("calls", calls=[connect, terminate]),
        cloud_change("calls", calls=[terminate]),
        cloud_change("smb_message_echoes", message_echoes=[echo]),
        cloud_change("smb_message_echoes", message_echoes=[echo], contacts=[]),
    ]
    async with _client(server) as client:
        for channel, body in enumerate(bodies):
            assert (await client.post(f"/webhook/c{channel}", content=body)).status_code == 200
    rows = await db.fetch("SELECT kind, type, message_id, wa_id FROM wabahook_events ORDER BY id")
    assert [tuple(row) for row in rows] == [
        ("call", "connect", "wacid.1", "4915198765432"),
        ("call", "terminate", "wacid.1", "4915198765432"),
        ("echo", "text", "wamid.echo", "4915198765432"),
    ]


async def test_events_listed_by_contact(server: str, db: asyncpg.Connection) -> None:
    # `storage.select_events(contact=...)`: the events naming that wa_id, user id or group id.
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "104455667788990",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {"phone_number_id": "190011223344556"},
                            "messages": [
                                {"from": "4915198765432", "id": "wamid.a", "type": "text"},
                                {"from_user_id": "DE.1", "id": "wamid.b", "type": "text"},
                                {"from": "4915198765432", "from_user_id": "DE.2", "id": "wamid.c"},
                                {"from": "4917612345678", "group_id": "G1", "id": "wamid.d"},
                            ],
                            "statuses": [
                                {"id": "wamid.e", "status": "read", "recipient_user_id": "DE.1"},
                                {"id": "wamid.f", "status": "sent", "recipient_id": "G1"},
                            ],
                            "errors": [{"code": 131000}],
                        },
                    }
                ],
            }
        ],
    }
    async with _client(server) as client:
        response = await client.post("/webhook/c", content=json.dumps(body).encode())
        assert response.status_code == 200

    async def listed(contact: str | None, kind: str | None = None) -> list[str | None]:
        rows = await storage.select_events(db, None, kind, None, 100, contact=contact)
        return [row["message_id"] for row in rows]

    assert await listed("4915198765432") == ["wamid.a", "wamid.c"]
    assert await listed("DE.1") == ["wamid.b", "wamid.e"]
    assert await listed("DE.2") == ["wamid.c"]
    assert await listed("G1") == ["wamid.d", "wamid.f"]
    assert await listed("4917612345678") == ["wamid.d"]  # a group member, by their own id
    assert await listed("DE.1", kind="status") == ["wamid.e"]
    assert await listed("nobody") == []
    assert len(await listed(None)) == 7
    # The positional call the CLI makes still lists everything.
    assert len(await storage.select_events(db, None, None, None, 100)) == 7
    (row,) = await storage.select_events(db, None, "message", None, 1, contact="DE.1")
    assert (row["wa_id"], row["user_id"], row["group_id"]) == (None, "DE.1", None)


async def test_same_message_id_on_two_numbers_is_two_events(
    server: str, db: asyncpg.Connection
) -> None:
    async with _client(server) as client:
        for number in ("111", "222"):
            body = cloud_text("wamid.shared", phone_number_id=number)
            assert (await client.post("/webhook/c", content=body)).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 2


async def test_onprem_dedup_is_per_channel(server: str, db: asyncpg.Connection) -> None:
    async with _client(server) as client:
        for channel in ("one", "two", "two"):
            body = onprem_text("ABGG-same")
            assert (await client.post(f"/webhook/{channel}", content=body)).status_code == 200
    rows = await db.fetch("SELECT channel FROM wabahook_events ORDER BY channel")
    assert [row["channel"] for row in rows] == ["one", "two"]


async def test_webhook_without_channel_uses_default(server: str, db: asyncpg.Connection) -> None:
    async with _client(server) as client:
        assert (await client.post("/webhook", content=onprem_text("A1"))).status_code == 200
    assert await db.fetchval("SELECT channel FROM wabahook_events") == "default"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("POST", "/", 404),
        ("POST", "/webhook/a/b", 404),
        ("POST", "/webhook/%20bad", 404),
        ("POST", "/webhookx", 404),
        ("GET", "/webhook", 405),
        ("PUT", "/webhook/acme", 405),
        ("DELETE", "/webhook", 405),
        ("POST", "/healthz", 405),
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
    ],
)
async def test_routes(
    method: str, path: str, status: int, server: str, db: asyncpg.Connection
) -> None:
    async with _client(server) as client:
        response = await client.request(method, path, content=b"{}" if method != "GET" else None)
    assert response.status_code == status
    if status == 405:
        assert "POST" in response.headers["allow"] or "GET" in response.headers["allow"]
    assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == 0


async def test_body_size_limit(server_factory, database_url: str, db: asyncpg.Connection) -> None:
    limit = 2048
    base = server_factory(database_url, max_body=limit)
    at_limit = b'{"unknown":"' + b"x" * (limit - 14) + b'"}'
    assert len(at_limit) == limit
    past_limit = at_limit[:-2] + b'x"}'
    async with _client(base) as client:
        assert (await client.post("/webhook/c", content=at_limit)).status_code == 200
        assert (await client.post("/webhook/c", content=past_limit)).status_code == 413

        # Streamed without Content-Length: the cap is enforced while reading.
        async def chunks(body: bytes):  # type: ignore[no-untyped-def]
            for i in range(0, len(body), 100):
                yield body[i : i + 100]

        assert (await client.post("/webhook/c", content=chunks(at_limit))).status_code == 200
        assert (await client.post("/webhook/c", content=chunks(past_limit))).status_code == 413
    bodies = await db.fetch("SELECT body FROM wabahook_requests")
    assert [bytes(row["body"]) for row in bodies] == [at_limit, at_limit]


async def test_default_limit_accepts_a_3mb_cloud_body(server: str, db: asyncpg.Connection) -> None:
    message = json.loads(cloud_text("wamid.big"))
    value = message["entry"][0]["changes"][0]["value"]
    value["messages"][0]["text"]["body"] = "ü" * (1_500_000)  # 3 MB of UTF-8
    body = json.dumps(message, ensure_ascii=False).encode()
    assert len(body) > 3_000_000
    async with _client(server) as client:
        assert (await client.post("/webhook/c", content=body)).status_code == 200
    assert await db.fetchval("SELECT octet_length(body) FROM wabahook_requests") == len(body)
    assert await db.fetchval("SELECT message_id FROM wabahook_events") == "wamid.big"


async def test_two_thousand_concurrent_requests(server: str, db: asyncpg.Connection) -> None:
    bodies = [cloud_text(f"wamid.load-{i}") for i in range(1000)]
    bodies += [onprem_text(f"ABGG-load-{i}") for i in range(1000)]
    port = int(server.rsplit(":", 1)[1])
    results = await post_many(port, "/webhook/load", bodies, connections=len(bodies))
    assert results.errors == {}
    assert list(results.statuses.values()) == [200] * len(bodies)
    assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == len(bodies)
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == len(bodies)
    assert await db.fetchval("SELECT count(DISTINCT message_id) FROM wabahook_events") == len(
        bodies
    )


async def test_slow_body_gets_408(
    server_factory, database_url: str, db: asyncpg.Connection
) -> None:
    base = server_factory(database_url, body_timeout_s=0.5)
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b'POST /webhook/c HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"messages"'
        )
        async with asyncio.timeout(30):
            status_line = await reader.readline()
    finally:
        writer.close()
    assert status_line.split()[1] == b"408"
    assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == 0
