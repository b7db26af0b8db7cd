"""Authentication in-process: HeaderAuth, SignatureCheck, the verification GET, per-channel
policies. The webhook route of `Wabahook` is driven through httpx.ASGITransport with its ingest
replaced by a recorder, so what passes and what is refused needs no database."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.asgi import Wabahook
from app.asgi_types import Receive, Scope, Send, respond
from app.auth import Policies, basic_credentials, policy_for
from app.channels import ChannelSettings, ChannelsFileError, load_channels
from app.config import Config

pytestmark = pytest.mark.anyio

BODY = b'{"object":"whatsapp_business_account","entry":[]}'


class Ingest:
    """Stands in for the durable ingest: records the bodies that got through."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        self.bodies.append(message["body"])
        await respond(send, 200, b"ok\n")


def app_with(config: Config) -> tuple[Wabahook, Ingest]:
    app = Wabahook(config)
    ingest = Ingest()
    app._webhook = app.webhook_stack(ingest)
    return app, ingest


@pytest.fixture
async def client_for() -> AsyncIterator[object]:
    clients: list[httpx.AsyncClient] = []

    def make(app: Wabahook) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode()).decode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- Basic credentials ------------------------------------------------------------------------

ROTATING = Config(basic_auth=["360dialog:old-secret", "360dialog:new-secret"])


@pytest.mark.parametrize("pair", ["360dialog:old-secret", "360dialog:new-secret"])
async def test_any_configured_basic_pair_is_accepted(client_for, pair: str) -> None:
    app, ingest = app_with(ROTATING)
    response = await client_for(app).post(
        "/webhook/c", content=BODY, headers={"authorization": basic(pair)}
    )
    assert response.status_code == 200
    assert ingest.bodies == [BODY]


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing credentials"),
        (basic("360dialog:wrong"), "wrong credentials"),
        (basic("someone:old-secret"), "wrong credentials"),
        (basic("360dialog:old-secre"), "wrong credentials"),  # a prefix is not a match
        ("Basic !!!not-base64!!!", "malformed credentials"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "malformed credentials"),
        ("Basic ", "malformed credentials"),
        ("", "malformed credentials"),
        ("Bearer " + base64.b64encode(b"360dialog:old-secret").decode(), "malformed credentials"),
    ],
)
async def test_refused_basic_credentials_get_401_and_nothing_reaches_ingest(
    client_for, authorization: str | None, reason: str
) -> None:
    app, ingest = app_with(ROTATING)
    headers = {} if authorization is None else {"authorization": authorization}
    response = await client_for(app).post("/webhook/c", content=BODY, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="wabahook"'
    assert response.text == f"unauthorized: {reason}\n"
    assert "secret" not in response.text
    assert ingest.bodies == []


def test_basic_credentials_parsing() -> None:
    assert basic_credentials(basic("a:b:c").encode()) == b"a:b:c"  # the password may hold ':'
    assert basic_credentials(b"BASIC " + base64.b64encode(b"a:b")) == b"a:b"  # any case
    assert basic_credentials(b"Basic " + base64.b64encode(b"ab")) is None


async def test_refused_before_a_byte_of_the_body_is_read() -> None:
    app, ingest = app_with(ROTATING)
    received: list[object] = []

    async def receive() -> dict[str, object]:
        received.append(1)
        return {"type": "http.request", "body": BODY, "more_body": False}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhook/c",
        "headers": [(b"content-length", str(len(BODY)).encode())],
        "query_string": b"",
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 401
    assert received == []  # uvicorn sends `100 Continue` only on the first receive
    assert ingest.bodies == []


# --- a static header --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-webhook-token": "t0ken"}, 200),
        ({"X-Webhook-Token": "t0ken"}, 200),  # header names are case-insensitive
        ({"x-webhook-token": "t0ke"}, 401),
        ({"x-webhook-token": ""}, 401),
        ({"x-other": "t0ken"}, 401),
        ({}, 401),
    ],
)
async def test_a_required_static_header(client_for, headers: dict[str, str], status: int) -> None:
    app, ingest = app_with(Config(auth_header="X-Webhook-Token: t0ken"))
    response = await client_for(app).post("/webhook/c", content=BODY, headers=headers)
    assert response.status_code == status
    assert ingest.bodies == ([BODY] if status == 200 else [])
    if status == 401:
        assert response.headers["www-authenticate"] == 'Header realm="wabahook"'


async def test_basic_and_header_together_require_both(client_for) -> None:
    app, ingest = app_with(Config(basic_auth=["u:p"], auth_header="X-Token: t"))
    client = client_for(app)
    only_basic = await client.post(
        "/webhook/c", content=BODY, headers={"authorization": basic("u:p")}
    )
    both = await client.post(
        "/webhook/c", content=BODY, headers={"authorization": basic("u:p"), "x-token": "t"}
    )
    assert (only_basic.status_code, both.status_code) == (401, 200)
    assert ingest.bodies == [BODY]


@pytest.mark.parametrize("setting", ["no-colon", ": value", "Name:", "  :  "])
def test_a_malformed_header_setting_is_refused_at_start(setting: str) -> None:
    with pytest.raises(ValueError, match="Name: value"):
        policy_for(Config(auth_header=setting), None)


# --- Meta's body signature --------------------------------------------------------------------

# Receivers that decode and re-encode before checking fail on exactly these: escapes and raw
# UTF-8 in the same body, and spacing no encoder would reproduce.
ESCAPED = (
    b'{ "object":"whatsapp_business_account","entry":[{"changes":[{"value":{"messages":[{"text":'
    b'{"body":"Gr\\u00fc\\u00dfe \xf0\x9f\x91\x8b Gr\xc3\xbc\xc3\x9fe \\ud83d\\udc4b \\/"}}]}}]}] }'
)


@pytest.mark.parametrize("body", [BODY, ESCAPED, b""])
async def test_a_correct_signature_over_the_raw_bytes_is_accepted(client_for, body: bytes) -> None:
    app, ingest = app_with(Config(app_secret=["app-secret"]))
    response = await client_for(app).post(
        "/webhook/c", content=body, headers={"x-hub-signature-256": signature("app-secret", body)}
    )
    assert response.status_code == 200
    assert ingest.bodies == [body]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing signature"),
        (signature("other-secret", ESCAPED), "wrong signature"),
        (signature("app-secret", ESCAPED + b" "), "wrong signature"),
        ("sha1=" + hashlib.sha1(ESCAPED).hexdigest(), "malformed signature"),
        ("sha256=", "malformed signature"),
        ("garbage", "malformed signature"),
    ],
)
async def test_a_missing_or_wrong_signature_gets_401(
    client_for, header: str | None, reason: str
) -> None:
    app, ingest = app_with(Config(app_secret=["app-secret"]))
    headers = {} if header is None else {"x-hub-signature-256": header}
    response = await client_for(app).post("/webhook/c", content=ESCAPED, headers=headers)
    assert response.status_code == 401
    assert response.text == f"unauthorized: {reason}\n"
    assert ingest.bodies == []


async def test_a_rotated_app_secret_and_an_upper_case_digest_are_accepted(client_for) -> None:
    app, _ = app_with(Config(app_secret=["old", "new"]))
    header = "sha256=" + signature("new", BODY).removeprefix("sha256=").upper()
    response = await client_for(app).post(
        "/webhook/c", content=BODY, headers={"x-hub-signature-256": header}
    )
    assert response.status_code == 200


# --- the verification handshake -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        ("hub.mode=subscribe&hub.verify_token=v3rify&hub.challenge=1158201444", 200, "1158201444"),
        ("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1158201444", 403, "forbidden\n"),
        ("hub.mode=unsubscribe&hub.verify_token=v3rify&hub.challenge=1", 403, "forbidden\n"),
        ("hub.mode=subscribe&hub.verify_token=v3rify", 403, "forbidden\n"),
        ("", 403, "forbidden\n"),
    ],
)
async def test_the_verification_get(client_for, query: str, status: int, text: str) -> None:
    app, _ = app_with(Config(verify_token="v3rify"))
    response = await client_for(app).get(f"/webhook/c?{query}")
    assert (response.status_code, response.text) == (status, text)


async def test_without_a_verify_token_the_get_stays_405(client_for) -> None:
    app, _ = app_with(Config())
    response = await client_for(app).get("/webhook/c?hub.mode=subscribe&hub.challenge=1")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_with_a_verify_token_other_methods_are_405_allowing_get(client_for) -> None:
    app, _ = app_with(Config(verify_token="v"))
    response = await client_for(app).put("/webhook/c", content=b"")
    assert (response.status_code, response.headers["allow"]) == (405, "GET, POST")


# --- per-channel settings -----------------------------------------------------------------------


def channels_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "channels.toml"
    path.write_text(text)
    return str(path)


async def test_channels_have_credentials_of_their_own(client_for, tmp_path: Path) -> None:
    path = channels_file(
        tmp_path,
        """
[channels.acme-de]
basic_auth = ["360dialog:acme"]

[channels.shop-at]
auth_header = "X-Token: shop"
""",
    )
    app, ingest = app_with(Config(basic_auth=["360dialog:global"], channels_file=path))
    client = client_for(app)

    async def status(channel: str, headers: dict[str, str]) -> int:
        response = await client.post(f"/webhook/{channel}", content=BODY, headers=headers)
        return response.status_code

    assert await status("acme-de", {"authorization": basic("360dialog:acme")}) == 200
    assert await status("acme-de", {"authorization": basic("360dialog:global")}) == 401
    # shop-at sets its own header and keeps the global Basic credentials.
    shop = {"authorization": basic("360dialog:global"), "x-token": "shop"}
    assert await status("shop-at", shop) == 200
    assert await status("shop-at", {"x-token": "shop"}) == 401
    # A channel not in the file uses the global settings.
    assert await status("other", {"authorization": basic("360dialog:global")}) == 200
    assert await status("other", {"authorization": basic("360dialog:acme")}) == 401
    assert len(ingest.bodies) == 3


def test_a_channel_can_drop_the_global_requirement(tmp_path: Path) -> None:
    path = channels_file(tmp_path, "[channels.open]\nbasic_auth = []\n")
    policies = Policies(Config(basic_auth=["u:p"]), load_channels(path))
    assert policies("open").open
    assert not policies("other").open
    assert not policies.all_open


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[channels.a]\nbasic_auth = 'not-a-list'\n", r"basic_auth"),
        ("[channels.a]\nunknown_field = 1\n", "unknown_field"),
        ("[channels.'bad name']\n", "'bad name' is not a channel"),
        ("[channels.a\n", "invalid channels file"),
        ("[channels.a]\nbasic_auth = ['no-colon']\n", "'user:password'"),
        ("[channels.a]\nauth_header = 'X Token: v'\n", "'Name: value'"),
    ],
)
def test_a_bad_channels_file_is_a_clear_error(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ChannelsFileError, match=match):
        load_channels(channels_file(tmp_path, text))


def test_a_missing_channels_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ChannelsFileError, match="cannot read the channels file"):
        load_channels(str(tmp_path / "absent.toml"))


def test_no_credentials_anywhere_is_open() -> None:
    assert Policies(Config(), {}).all_open
    assert not Policies(Config(), {"a": ChannelSettings(app_secret=["s"])}).all_open
