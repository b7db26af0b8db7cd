"""Authentication through a real server: refused requests store nothing, accepted ones are
stored byte for byte, and the signature is checked over the bytes as they arrived."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from tests.corpus import cloud_text

pytestmark = pytest.mark.anyio

# Escapes and raw UTF-8 together: a receiver that re-encodes before checking fails on this.
ESCAPED = cloud_text("wamid.sig1").replace(b'"body":"', b'"body":"Gr\\u00fc\\u00dfe \xc3\xbc ', 1)


def _basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode()).decode()


async def test_basic_auth_end_to_end(
    server_factory: Callable[..., str], database_url: str, db: asyncpg.Connection
) -> None:
    base = server_factory(database_url, basic_auth=["360dialog:s3cret"])
    async with httpx.AsyncClient(base_url=base) as client:
        refused = [
            await client.post("/webhook/a", content=cloud_text("wamid.a1")),
            await client.post(
                "/webhook/a",
                content=cloud_text("wamid.a2"),
                headers={"authorization": _basic("360dialog:wrong")},
            ),
        ]
        accepted = await client.post(
            "/webhook/a",
            content=cloud_text("wamid.a3"),
            headers={"authorization": _basic("360dialog:s3cret")},
        )
    assert [r.status_code for r in refused] == [401, 401]
    assert accepted.status_code == 200
    bodies = await db.fetch("SELECT body FROM wabahook_requests")
    assert [row["body"] for row in bodies] == [cloud_text("wamid.a3")]


async def test_signature_end_to_end_over_the_received_bytes(
    server_factory: Callable[..., str], database_url: str, db: asyncpg.Connection
) -> None:
    assert b"\\u00fc" in ESCAPED and "ü".encode() in ESCAPED
    base = server_factory(database_url, app_secret=["meta-app-secret"])
    digest = hmac.new(b"meta-app-secret", ESCAPED, hashlib.sha256).hexdigest()
    async with httpx.AsyncClient(base_url=base) as client:
        good = await client.post(
            "/webhook/s", content=ESCAPED, headers={"x-hub-signature-256": f"sha256={digest}"}
        )
        bad = await client.post(
            "/webhook/s",
            content=ESCAPED + b" ",
            headers={"x-hub-signature-256": f"sha256={digest}"},
        )
    assert (good.status_code, bad.status_code) == (200, 401)
    bodies = await db.fetch("SELECT body FROM wabahook_requests")
    assert [row["body"] for row in bodies] == [ESCAPED]
    assert await db.fetchval("SELECT count(*) FROM wabahook_events") == 1


async def test_the_verification_get_end_to_end(
    server_factory: Callable[..., str], database_url: str
) -> None:
    base = server_factory(database_url, verify_token="v3rify")
    async with httpx.AsyncClient(base_url=base) as client:
        ok = await client.get(
            "/webhook/v",
            params={"hub.mode": "subscribe", "hub.verify_token": "v3rify", "hub.challenge": "42"},
        )
        wrong = await client.get(
            "/webhook/v",
            params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "42"},
        )
    assert (ok.status_code, ok.text) == (200, "42")
    assert wrong.status_code == 403
