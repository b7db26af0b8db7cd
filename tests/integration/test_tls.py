"""wabahook serving HTTPS itself (`ssl_certfile` / `ssl_keyfile`), under real uvicorn.

360dialog delivers only over HTTPS with a publicly trusted certificate; here a local CA
(trustme) stands in for a public one, and the client trusts exactly that CA.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import trustme

from tests.corpus import CLOUD_TEXT

pytestmark = pytest.mark.anyio

# Most bytes read of the answer to a plain-HTTP request: the status line is all that matters.
PLAIN_ANSWER_BYTES = 65536
IO_TIMEOUT_S = 30.0  # seconds one socket operation may take


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    """A local CA, and a certificate it issued for 127.0.0.1 with its key (PEM files)."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(keyfile))
    return ca, certfile, keyfile


@pytest.fixture
def tls_server(
    server_factory: Callable[..., str],
    database_url: str,
    tls_files: tuple[trustme.CA, Path, Path],
) -> tuple[str, int]:
    """(https base URL, port) of a wabahook serving TLS."""
    _, certfile, keyfile = tls_files
    base_url = server_factory(database_url, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile))
    # running_server names the socket it listens on as http://; the server speaks TLS there.
    port = urlsplit(base_url).port
    assert port is not None
    return f"https://127.0.0.1:{port}", port


def _plain_http_answer(port: int, body: bytes) -> bytes:
    """What a plain-HTTP POST to the port gets back before the connection ends (bounded)."""
    request = (
        b"POST /webhook/tls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as sock:
        try:
            sock.sendall(request)
            while len(answer) < PLAIN_ANSWER_BYTES:
                chunk = sock.recv(PLAIN_ANSWER_BYTES)
                if not chunk:
                    break
                answer += chunk
        except ConnectionError:  # the server reset the connection: no answer at all
            pass
    return answer


async def test_a_webhook_over_https_is_answered_200_and_stored(
    tls_server: tuple[str, int],
    tls_files: tuple[trustme.CA, Path, Path],
    db: asyncpg.Connection,
) -> None:
    base_url, port = tls_server
    ca = tls_files[0]
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)

    plain = _plain_http_answer(port, CLOUD_TEXT)
    async with httpx.AsyncClient(base_url=base_url, verify=trusted, timeout=60) as client:
        response = await client.post("/webhook/tls", content=CLOUD_TEXT)

    assert not plain.startswith(b"HTTP/1.1 200"), plain[:200]
    assert (response.status_code, response.text) == (200, "ok\n")
    rows = await db.fetch("SELECT channel, outcome, body FROM wabahook_requests")
    assert [(r["channel"], r["outcome"], bytes(r["body"])) for r in rows] == [
        ("tls", "stored", CLOUD_TEXT)
    ]
    assert await db.fetchval("SELECT count(*) FROM wabahook_events WHERE channel = 'tls'") == 1


async def test_a_client_that_does_not_trust_the_ca_is_refused(
    tls_server: tuple[str, int], db: asyncpg.Connection
) -> None:
    base_url, _ = tls_server

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.post("/webhook/tls", content=CLOUD_TEXT)

    assert await db.fetchval("SELECT count(*) FROM wabahook_requests") == 0
