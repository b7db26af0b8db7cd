"""360dialog's configuration API: register the webhook URL of a number, and read it back.

`POST /v1/configs/webhook` with `{"url": ..., "headers": {...}}` sets where 360dialog delivers
and which headers it sends with every delivery; `GET` on the same path returns the current
setting. Every call carries the number's `D360-API-KEY` (docs/protocol.md §3).

httpx errors and API refusals are translated here, at one seam (`_translate_errors`), into a
`Dialog360Error` subclass whose message is one line and never contains the API key.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import msgspec

from app import credentials
from app.errors import WabahookError

Hosting = Literal["cloud", "onprem"]
BASE_URLS: dict[Hosting, str] = {
    "cloud": "https://waba-v2.360dialog.io",
    "onprem": "https://waba.360dialog.io",
}
WEBHOOK_PATH = "/v1/configs/webhook"
API_KEY_HEADER = "D360-API-KEY"
TIMEOUT_S = 30.0  # seconds one API call may take, connecting included
REDACTED = "<redacted>"
# The most of an API error text a message quotes: enough to read, not a page of HTML.
_ERROR_TEXT_CHARS = 300
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class Dialog360Error(WabahookError):
    """The 360dialog API call failed."""


class WebhookUrlRefused(Dialog360Error):
    """360dialog would refuse this webhook URL."""


class ApiKeyRefused(Dialog360Error):
    """360dialog refused the API key."""


class ApiError(Dialog360Error):
    """360dialog answered with an error."""


class ApiTimeout(Dialog360Error):
    """360dialog did not answer in time."""


class ApiUnreachable(Dialog360Error):
    """360dialog could not be reached."""


class ApiAnswerInvalid(Dialog360Error):
    """360dialog's answer is not JSON."""


def check_webhook_url(url: str) -> None:
    """Raise `WebhookUrlRefused`, naming the rule, for a URL 360dialog would refuse.

    The rules (docs/protocol.md §2 and §3): 360dialog delivers over HTTPS only, to an
    absolute URL; Cloud API numbers refuse an explicit `:port` and any `_` (in the host
    name, and so, to be safe, anywhere). Credentials belong in the registered headers, not
    in the URL's userinfo, which would also be stored and shown in clear. The same rules
    apply to On-Premise numbers, so a URL keeps working when the number moves to Cloud.
    """
    # The URL itself is never quoted: it may carry a password in its userinfo.
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise WebhookUrlRefused("not an absolute URL: give https://host/path")
    if "@" in parts.netloc:
        raise WebhookUrlRefused(
            "the URL carries user:password@: register credentials as headers "
            "(--basic-auth or --header) instead"
        )
    if parts.scheme.lower() != "https":
        raise WebhookUrlRefused(
            f"not https ({parts.scheme}://): 360dialog delivers only over HTTPS, with a "
            "publicly trusted certificate"
        )
    try:
        port = parts.port
    except ValueError:  # a port that is not a number is still a port
        port = -1
    if port is not None or parts.netloc.endswith(":"):
        raise WebhookUrlRefused(
            "the URL names a port: Cloud API webhook URLs may not contain one "
            "(serve on 443, or put a reverse proxy in front)"
        )
    if "_" in url:
        raise WebhookUrlRefused(
            "the URL contains '_': Cloud API refuses it (rename the host or the channel)"
        )


def base_url(hosting: Hosting, override: str | None = None) -> str:
    """The API's base URL for the number's hosting; `override` (D360_BASE_URL) wins.

    An override must be https, except on loopback (a local fake), so the key is never sent
    in clear over a network.
    """
    if override is None:
        return BASE_URLS[hosting]
    parts = urlsplit(override)
    plain_local = parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    if not parts.netloc or not (parts.scheme == "https" or plain_local):
        raise Dialog360Error(
            f"D360_BASE_URL must be an https:// URL (http:// only on loopback): {override!r}"
        )
    return override.rstrip("/")


def basic_auth_header(pair: str) -> dict[str, str]:
    """`user:password` as the `Authorization: Basic ...` header 360dialog will send."""
    token = base64.b64encode(credentials.basic_pair(pair).encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def static_header(text: str) -> dict[str, str]:
    """`Name: value` as one header 360dialog will send."""
    name, value = credentials.header(text)
    return {name: value}


def redact_headers(answer: Any) -> Any:
    """`answer` with the value of every header under a `headers` key replaced: what 360dialog
    sends back includes the registered credentials."""
    if isinstance(answer, list):
        return [redact_headers(item) for item in answer]
    if not isinstance(answer, dict):
        return answer
    redacted: dict[str, Any] = {}
    for key, value in answer.items():
        if key == "headers" and isinstance(value, dict):
            redacted[key] = dict.fromkeys(value, REDACTED)
        else:
            redacted[key] = redact_headers(value)
    return redacted


class ConfigurationClient:
    """The webhook calls of one number's API key; use as a context manager."""

    def __init__(
        self,
        api_key: str,
        base: str,
        *,
        timeout: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise Dialog360Error("no 360dialog API key: set D360_API_KEY")
        if not (api_key.isascii() and api_key.isprintable()) or " " in api_key:
            # Said without the key: it goes into a header, and this message to a terminal.
            raise Dialog360Error("D360_API_KEY is not printable ASCII without spaces")
        self._api_key = api_key
        self.base = base
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=base,
            headers={API_KEY_HEADER: api_key, "Accept": "application/json"},
            timeout=timeout,
            follow_redirects=False,  # a redirect would carry the key to wherever it points
            transport=transport,
        )

    def __enter__(self) -> ConfigurationClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._http.close()

    def set_webhook(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        """Register `url` (and the headers sent with every delivery); the API's answer."""
        check_webhook_url(url)
        body: dict[str, Any] = {"url": url}
        if headers:
            body["headers"] = dict(headers)
        return self._call("POST", body)

    def get_webhook(self) -> Any:
        """The registered webhook as the API returns it (`url`, and `headers` if any)."""
        return self._call("GET", None)

    def _call(self, method: str, body: dict[str, Any] | None) -> Any:
        with self._translate_errors():
            response = self._http.request(method, WEBHOOK_PATH, json=body)
            return self._answer(response)

    def _answer(self, response: httpx.Response) -> Any:
        status = response.status_code
        if status in (401, 403):
            raise ApiKeyRefused(
                f"360dialog refused the API key (HTTP {status}{_quote(response)}): "
                "check D360_API_KEY and the number's hosting (--hosting)"
            )
        if not 200 <= status < 300:
            raise ApiError(f"360dialog answered HTTP {status}{_quote(response)}")
        if not response.content.strip():
            return {}
        try:
            return msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            kind = response.headers.get("content-type", "no content type")
            raise ApiAnswerInvalid(
                f"360dialog answered HTTP {status} with something that is not JSON ({kind}): "
                f"is D360_BASE_URL right? ({self.base})"
            ) from None

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """Every failure as one `Dialog360Error` line, the API key scrubbed from it."""
        try:
            try:
                yield
            except httpx.TimeoutException as exc:
                raise ApiTimeout(
                    f"360dialog ({self.base}) did not answer within {self._timeout:g} s "
                    f"({type(exc).__name__})"
                ) from exc
            except httpx.ConnectError as exc:  # refused, DNS, TLS: the network, not the API
                raise ApiUnreachable(
                    f"cannot reach 360dialog at {self.base}: {type(exc).__name__}: {exc}"
                ) from exc
            except httpx.TransportError as exc:  # connected, then the answer broke off
                raise ApiUnreachable(
                    f"the connection to 360dialog at {self.base} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        except Dialog360Error as exc:
            message = str(exc).replace(self._api_key, REDACTED)
            raise type(exc)(" ".join(message.split())) from exc.__cause__


def _quote(response: httpx.Response) -> str:
    """`: <the API's error text>` when the answer is JSON, else nothing."""
    try:
        answer = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return ""
    text = _error_text(answer)
    if len(text) > _ERROR_TEXT_CHARS:
        text = text[:_ERROR_TEXT_CHARS] + "..."
    return f": {text}" if text else ""


def _error_text(answer: Any) -> str:
    """The message in the error shapes 360dialog and Meta use, else the compact JSON."""
    if isinstance(answer, dict):
        meta = answer.get("meta")
        if isinstance(meta, dict) and isinstance(meta.get("developer_message"), str):
            return str(meta["developer_message"])
        errors = answer.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            parts = [str(first[key]) for key in ("title", "details") if first.get(key)]
            if parts:
                return " - ".join(parts)
        error = answer.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for key in ("error", "message", "detail"):
            if isinstance(answer.get(key), str):
                return str(answer[key])
    return msgspec.json.encode(redact_headers(answer)).decode()
