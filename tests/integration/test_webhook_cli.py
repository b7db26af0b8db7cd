"""`wabahook webhook set|get` as a real process against a local fake of 360dialog's API.

The fake (the one fake the tests allow) is a real HTTP server on 127.0.0.1 that checks what
the real API would (the path, the `D360-API-KEY` header, the JSON body), records every
request and keeps the registered webhook like the API does; `D360_BASE_URL` points the CLI
at it.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_wabahook
from tests.support.environment import scrubbed_environment

API_KEY = "d360-key-7f3a9c0e5b1d"
PATH = "/v1/configs/webhook"
URL = "https://hooks.example.com/webhook/acme-de"
# Longest a held request waits for the test's release: a bound, never the synchronisation.
HOLD_BOUND_S = 60.0
# The client timeout the timeout case runs with: well below the hold, and quick.
CLIENT_TIMEOUT_S = "0.5"

# (status, content type, body) the fake answers instead of its normal behaviour.
Reply = tuple[int, str, bytes]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeDialog360:
    """What the fake answers, and what it was sent."""

    url: str = ""  # the fake's base URL, once it listens
    key: str = API_KEY
    received: list[Received] = field(default_factory=list)
    registered: dict[str, Any] = field(default_factory=dict)
    reply: Reply | None = None  # set: every request gets this answer
    hold: bool = False  # set: every request is held until `release` (a timeout case)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, request: Received) -> Reply | None:
        """The real API's behaviour, as far as the CLI relies on it; None: no answer."""
        self.received.append(request)
        if self.hold:
            self.release.wait(HOLD_BOUND_S)
            return None
        if self.reply is not None:
            return self.reply
        if request.path != PATH:
            return _json_reply(404, {"meta": {"developer_message": "not found"}})
        if request.headers.get("d360-api-key") != self.key:
            return _json_reply(401, {"meta": {"developer_message": "Invalid api key"}})
        if request.method == "GET":
            return _json_reply(200, self.registered)
        try:
            body = request.json()
        except ValueError:
            return _json_reply(400, {"errors": [{"title": "body is not JSON"}]})
        headers = body.get("headers", {}) if isinstance(body, dict) else None
        if (
            set(body) - {"url", "headers"}
            or not isinstance(body.get("url"), str)
            or not isinstance(headers, dict)
            or not all(isinstance(v, str) for v in headers.values())
        ):
            return _json_reply(400, {"errors": [{"title": "invalid body"}]})
        self.registered = body
        return _json_reply(200, {"url": body["url"]})


def _json_reply(status: int, body: object) -> Reply:
    return status, "application/json", json.dumps(body).encode()


def _handler(fake: FakeDialog360) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            request = Received(
                self.command,
                self.path,
                {name.lower(): value for name, value in self.headers.items()},
                self.rfile.read(length),
            )
            reply = fake.answer(request)
            if reply is None:
                self.close_connection = True
                return
            status, content_type, body = reply
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test asserts on what was received, not on a log

    return Handler


@pytest.fixture
def fake() -> Iterator[FakeDialog360]:
    state = FakeDialog360()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-360dialog", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()  # a held request ends now, not at its bound
        server.shutdown()
        server.server_close()
        thread.join(HOLD_BOUND_S)


def _environment(fake_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in scrubbed_environment().items()
        if not name.startswith("D360_")
    }
    env["D360_API_KEY"] = API_KEY
    if fake_url is not None:
        env["D360_BASE_URL"] = fake_url
    env.update(extra)
    return env


def webhook(
    fake: FakeDialog360 | str | None, *args: str, **extra: str
) -> subprocess.CompletedProcess[bytes]:
    """`wabahook webhook ARGS` against the fake (or a URL); the key must show nowhere."""
    base = fake.url if isinstance(fake, FakeDialog360) else fake
    result = run_wabahook("webhook", *args, env=_environment(base, **extra))
    assert API_KEY.encode() not in result.stdout + result.stderr
    assert b"Traceback" not in result.stderr
    return result


def ok(fake: FakeDialog360, *args: str, **extra: str) -> str:
    result = webhook(fake, *args, **extra)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


def failed(fake: FakeDialog360 | str, *args: str, **extra: str) -> str:
    """The one-line message of a failed command (exit status 1)."""
    result = webhook(fake, *args, **extra)
    assert result.returncode == 1, result.stdout.decode(errors="replace")
    assert result.stdout == b""
    [line] = result.stderr.decode().splitlines()
    return line


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def only_post(fake: FakeDialog360) -> Received:
    [request] = fake.received
    assert (request.method, request.path) == ("POST", PATH)
    assert request.headers["d360-api-key"] == API_KEY
    assert request.headers["content-type"] == "application/json"
    return request


# --- set ----------------------------------------------------------------------------------


def test_set_with_basic_auth_sends_the_exact_body(fake: FakeDialog360) -> None:
    output = ok(fake, "set", "--url", URL, "--basic-auth", "360dialog:s3cret-pass")

    assert only_post(fake).json() == {
        "url": URL,
        "headers": {"Authorization": basic("360dialog:s3cret-pass")},
    }
    assert f"url: {URL}" in output
    assert "headers: Authorization: <redacted>" in output
    assert f'360dialog answered: {{"url":"{URL}"}}' in output
    assert "s3cret-pass" not in output
    assert basic("360dialog:s3cret-pass") not in output


def test_set_with_a_header(fake: FakeDialog360) -> None:
    output = ok(fake, "set", "--url", URL, "--header", "X-Webhook-Token: tok-81b2")

    assert only_post(fake).json() == {"url": URL, "headers": {"X-Webhook-Token": "tok-81b2"}}
    assert "headers: X-Webhook-Token: <redacted>" in output
    assert "tok-81b2" not in output


def test_set_without_credentials_sends_no_headers(fake: FakeDialog360) -> None:
    output = ok(fake, "set", "--url", URL)

    assert only_post(fake).json() == {"url": URL}
    assert "headers: (none)" in output


CHANNELS = """
[channels.acme-de]
basic_auth = ["360dialog:first-secret", "360dialog:rotated-secret"]
auth_header = "X-Webhook-Token: tok-acme"
url = "https://hooks.example.com/webhook/acme-de"
hosting = "onprem"

[channels.shop-at]
url = "https://hooks.example.com/webhook/shop-at"
"""


@pytest.fixture
def channels_file(tmp_path: Path) -> str:
    path = tmp_path / "channels.toml"
    path.write_text(CHANNELS)
    return str(path)


def test_set_from_a_channel_registers_its_url_and_first_credentials(
    fake: FakeDialog360, channels_file: str
) -> None:
    output = ok(fake, "set", "--channel", "acme-de", WABAHOOK_CHANNELS_FILE=channels_file)

    assert only_post(fake).json() == {
        "url": "https://hooks.example.com/webhook/acme-de",
        "headers": {
            "Authorization": basic("360dialog:first-secret"),
            "X-Webhook-Token": "tok-acme",
        },
    }
    assert "registered with 360dialog (onprem, " in output
    assert "secret" not in output and "tok-acme" not in output


def test_set_options_win_over_the_channel_file(fake: FakeDialog360, channels_file: str) -> None:
    other = "https://other.example.com/webhook/acme-de"
    args = ("--url", other, "--basic-auth", "ops:new-pass", "--hosting", "cloud")

    output = ok(fake, "set", "--channel", "acme-de", "--channels-file", channels_file, *args)

    assert only_post(fake).json() == {
        "url": other,
        "headers": {"Authorization": basic("ops:new-pass"), "X-Webhook-Token": "tok-acme"},
    }
    assert "registered with 360dialog (cloud, " in output


def test_set_from_a_channel_falls_back_to_the_global_credentials(
    fake: FakeDialog360, channels_file: str
) -> None:
    ok(
        fake,
        "set",
        "--channel",
        "shop-at",
        WABAHOOK_CHANNELS_FILE=channels_file,
        WABAHOOK_BASIC_AUTH="global:pass-1,global:pass-2",
    )

    assert only_post(fake).json() == {
        "url": "https://hooks.example.com/webhook/shop-at",
        "headers": {"Authorization": basic("global:pass-1")},
    }


def test_set_of_a_channel_not_in_the_file_fails(fake: FakeDialog360, channels_file: str) -> None:
    line = failed(fake, "set", "--channel", "nobody", WABAHOOK_CHANNELS_FILE=channels_file)

    assert "no channel 'nobody'" in line
    assert fake.received == []


# --- get ----------------------------------------------------------------------------------


def test_get_shows_the_registered_webhook_with_header_values_redacted(
    fake: FakeDialog360, channels_file: str
) -> None:
    fake.registered = {"url": URL, "headers": {"Authorization": basic("360dialog:first-secret")}}

    output = ok(fake, "get", "--channel", "acme-de", WABAHOOK_CHANNELS_FILE=channels_file)

    [request] = fake.received
    assert (request.method, request.path, request.body) == ("GET", PATH, b"")
    assert request.headers["d360-api-key"] == API_KEY
    assert f"url: {URL}" in output
    assert "headers: Authorization: <redacted>" in output
    assert f"channel acme-de expects {URL}: matches" in output
    assert "first-secret" not in output
    assert basic("360dialog:first-secret") not in output


def test_get_after_set_reads_back_what_was_set(fake: FakeDialog360) -> None:
    ok(fake, "set", "--url", URL, "--header", "X-Webhook-Token: tok-81b2")

    output = ok(fake, "get")

    assert f"url: {URL}" in output
    assert "headers: X-Webhook-Token: <redacted>" in output
    assert "tok-81b2" not in output


# --- failures: one line on stderr, exit status 1, never the key ---------------------------


def test_a_refused_key_is_one_clear_line(fake: FakeDialog360) -> None:
    fake.key = "another-key"

    line = failed(fake, "set", "--url", URL)

    assert line == (
        "Error: 360dialog refused the API key (HTTP 401: Invalid api key): check "
        "D360_API_KEY and the number's hosting (--hosting)"
    )
    assert len(fake.received) == 1


def test_a_server_error_quotes_the_api_error_text(fake: FakeDialog360) -> None:
    fake.reply = _json_reply(
        500, {"errors": [{"code": 500, "title": "Internal error", "details": "try later"}]}
    )

    line = failed(fake, "get")

    assert line == "Error: 360dialog answered HTTP 500: Internal error - try later"


def test_an_error_echoing_the_key_does_not_show_it(fake: FakeDialog360) -> None:
    fake.reply = _json_reply(400, {"error": {"message": f"bad key {API_KEY} for this number"}})

    line = failed(fake, "get")

    assert line == "Error: 360dialog answered HTTP 400: bad key <redacted> for this number"


def test_a_non_json_answer_is_one_clear_line(fake: FakeDialog360) -> None:
    fake.reply = (200, "text/html", b"<html><body>\n<h1>Welcome</h1>\n</body></html>")

    line = failed(fake, "get")

    assert line.startswith("Error: 360dialog answered HTTP 200 with something that is not JSON")
    assert "text/html" in line and fake.url in line


def test_a_timeout_is_one_clear_line(fake: FakeDialog360) -> None:
    fake.hold = True

    line = failed(fake, "set", "--url", URL, "--timeout", CLIENT_TIMEOUT_S)

    assert line.startswith(f"Error: 360dialog ({fake.url}) did not answer within 0.5 s")
    assert len(fake.received) == 1


def test_a_refused_connection_is_one_clear_line() -> None:
    # Bound but not listening: connections to it are refused, and no one else takes the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"

        line = failed(url, "get")

    assert line.startswith(f"Error: cannot reach 360dialog at {url}: ConnectError")
    assert "refused" in line.lower()


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://hooks.example.com/webhook/acme-de", "not https (http://)"),
        ("hooks.example.com/webhook/acme-de", "not an absolute URL"),
        ("/webhook/acme-de", "not an absolute URL"),
        ("https://ops:pw-in-url@hooks.example.com/webhook/acme-de", "user:password@"),
        ("https://hooks.example.com:8443/webhook/acme-de", "names a port"),
        ("https://hooks.example.com:443/webhook/acme-de", "names a port"),
        ("https://hooks_eu.example.com/webhook/acme-de", "contains '_'"),
        ("https://hooks.example.com/webhook/acme_de", "contains '_'"),
    ],
    ids=["http", "no-scheme", "relative", "userinfo", "port", "port-443", "host-_", "path-_"],
)
def test_a_url_360dialog_would_refuse_is_refused_before_any_request(
    fake: FakeDialog360, url: str, rule: str
) -> None:
    line = failed(fake, "set", "--url", url)

    assert line.startswith("Error: refused before sending: ")
    assert rule in line
    assert "pw-in-url" not in line
    assert fake.received == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--url", URL, "--basic-auth", "no-colon"), "'user:password'"),
        (("--url", URL, "--header", "no value"), "'Name: value'"),
        (("--basic-auth", "a:b"), "give --url"),
    ],
    ids=["basic-auth", "header", "no-url"],
)
def test_bad_options_are_usage_errors(
    fake: FakeDialog360, args: tuple[str, ...], message: str
) -> None:
    result = webhook(fake, "set", *args)

    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert fake.received == []


def test_without_the_key_nothing_is_sent(fake: FakeDialog360) -> None:
    env = _environment(fake.url)
    del env["D360_API_KEY"]

    result = run_wabahook("webhook", "get", env=env)

    assert result.returncode == 2
    assert b"set D360_API_KEY" in result.stderr
    assert fake.received == []


def test_the_key_is_not_a_flag_and_not_in_help() -> None:
    for command in ("set", "get"):
        result = run_wabahook("webhook", command, "--help", env=_environment(None))
        assert result.returncode == 0
        assert b"--d360-api-key" not in result.stdout
        assert API_KEY.encode() not in result.stdout


def test_a_plain_http_base_url_off_loopback_is_refused() -> None:
    line = failed("http://api.example.com", "get")

    assert "D360_BASE_URL must be an https:// URL" in line
