"""One hand-on of one stored event: to the user's URL over HTTP, or to their Python handler.

`Forwarder.deliver` makes one attempt and says how it went; the dispatcher decides what follows
(the next delivery of the contact, a retry, a dead letter). What goes out over HTTP:

- events mode: one POST per event, the JSON envelope `Event` with the event's payload spliced in
  as stored (never re-encoded);
- bodies mode: the stored body of the event's request, byte for byte;
- items mode: a body of the event's format holding just its item (`app/items.py`).

Every request carries the Standard Webhooks headers when `forward_secret` is set (`webhook-id`
names the delivery, so it is the same on every attempt), and `X-Hub-Signature-256` when
`forward_app_secret` is set. Success is a 2xx within `forward_timeout_s`; a 429 or 503 may say
with `Retry-After` when to try again.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import msgspec

from app import items, signing
from app.channels import ChannelSettings
from app.config import Config

MAX_ERROR_CHARS = 300  # of a failure's description, kept with the delivery
MAX_RETRY_AFTER_S = 86_400.0  # a Retry-After further out than a day is taken as a day
RESPONSE_READ_BYTES = 64 * 1024  # of a response body: enough to reuse the connection


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """An event as it is handed on: the POST body in events mode, a handler's argument."""

    id: int  # wabahook's event id: unique, increasing in arrival order
    channel: str
    kind: str
    type: str | None
    message_id: str | None
    wa_id: str | None
    user_id: str | None
    group_id: str | None
    phone_number_id: str | None
    waba_id: str | None
    received_at: datetime
    event_ts: datetime | None
    request_id: uuid.UUID  # the stored body that carried it
    payload: Any  # the event's own JSON as received (to a handler: decoded)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed delivery: one attempt to make."""

    id: int
    received_on: date
    attempts: int  # made before this one
    event: Event  # its payload is the stored JSON text, as msgspec.Raw
    seq: int  # the event's position in its body
    body: bytes | None  # the request's stored body, in bodies and items mode

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        event = Event(
            id=row["event_id"],
            channel=row["channel"],
            kind=row["kind"],
            type=row["type"],
            message_id=row["message_id"],
            wa_id=row["wa_id"],
            user_id=row["user_id"],
            group_id=row["group_id"],
            phone_number_id=row["phone_number_id"],
            waba_id=row["waba_id"],
            received_at=row["received_at"],
            event_ts=row["event_ts"],
            request_id=row["request_id"],
            payload=msgspec.Raw(row["payload"].encode()),
        )
        return cls(row["id"], row["received_on"], row["attempts"], event, row["seq"], row["body"])

    @property
    def webhook_id(self) -> str:
        return f"dlv_{self.id}"


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str | None = None
    retry_after_s: float | None = None  # what a 429 or 503 asked for


Handler = Callable[[Event], Awaitable[Any]]


def load_handler(spec: str) -> Handler:
    """The async function `package.module:function` names; ValueError if it is none."""
    module_name, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"handler {spec}: {exc}") from exc
    if not inspect.iscoroutinefunction(function):
        raise ValueError(f"handler {spec} is not an async function")
    handler: Handler = function
    return handler


@dataclass(frozen=True, slots=True)
class Routing:
    """Which channels have a target: every one but `off` when `default`, else those in `on`."""

    default: bool
    on: tuple[str, ...]
    off: tuple[str, ...]

    @property
    def any(self) -> bool:
        """Whether any channel's events are handed on."""
        return self.default or bool(self.on)


def routing(config: Config, channels: dict[str, ChannelSettings]) -> Routing:
    own = {name: settings.forward_url for name, settings in channels.items()}
    return Routing(
        default=bool(config.forward_url or config.handler),
        on=tuple(sorted(name for name, url in own.items() if url)),
        off=tuple(sorted(name for name, url in own.items() if url == "")),
    )


class Forwarder:
    """Makes attempts; open with `async with` (the HTTP connection pool)."""

    def __init__(self, config: Config, channels: dict[str, ChannelSettings]) -> None:
        self._config = config
        self._urls = {name: s.forward_url for name, s in channels.items() if s.forward_url}
        self._handler = load_handler(config.handler) if config.handler else None
        self._key = signing.secret_key(config.forward_secret) if config.forward_secret else None
        self._session: aiohttp.ClientSession | None = None
        self.mode = config.forward_mode
        self.one_per_body = self.mode == "bodies"  # a delivery per request, not per event
        self.needs_body = self.mode != "events"  # claims fetch the stored body

    async def __aenter__(self) -> Forwarder:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._config.forward_concurrency),
            timeout=aiohttp.ClientTimeout(total=self._config.forward_timeout_s),
            headers={"User-Agent": "wabahook"},
            skip_auto_headers=("Content-Type",),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, delivery: Delivery) -> Outcome:
        url = self._urls.get(delivery.event.channel) or self._config.forward_url
        try:
            if url is None:
                assert self._handler is not None, "the dispatcher only claims routed events"
                return await self._call_handler(self._handler, delivery.event)
            return await self._post(url, delivery)
        except TimeoutError:
            return Outcome(False, f"no answer within {self._config.forward_timeout_s:g} s")
        except Exception as exc:  # refused, reset, a bad URL: whatever it is, a failed attempt
            return Outcome(False, _describe(exc))

    async def _call_handler(self, handler: Handler, event: Event) -> Outcome:
        decoded = msgspec.structs.replace(event, payload=msgspec.json.decode(event.payload))
        try:
            async with asyncio.timeout(self._config.forward_timeout_s):
                await handler(decoded)
        except TimeoutError:
            raise
        except Exception as exc:  # the user's code: any exception is a failed attempt
            return Outcome(False, _describe(exc))
        return Outcome(True)

    async def _post(self, url: str, delivery: Delivery) -> Outcome:
        assert self._session is not None, "open the Forwarder with async with"
        body = self._body(delivery)
        headers = {"Content-Type": "application/json"}
        if self._key is not None:
            now = int(time.time())
            headers["webhook-id"] = delivery.webhook_id
            headers["webhook-timestamp"] = str(now)
            headers["webhook-signature"] = signing.standard_webhooks(
                self._key, delivery.webhook_id, now, body
            )
        if self._config.forward_app_secret is not None:
            headers["X-Hub-Signature-256"] = signing.hub_signature(
                self._config.forward_app_secret, body
            )
        async with self._session.post(url, data=body, headers=headers) as response:
            answer = await response.content.read(RESPONSE_READ_BYTES)
            if 200 <= response.status < 300:
                return Outcome(True)
            retry_after = None
            if response.status in (429, 503):
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            text = answer[:100].decode("utf-8", "replace").strip()
            error = f"HTTP {response.status}" + (f": {text}" if text else "")
            return Outcome(False, error[:MAX_ERROR_CHARS], retry_after)

    def _body(self, delivery: Delivery) -> bytes:
        if self.mode == "events" or delivery.body is None:
            return msgspec.json.encode(delivery.event)
        if self.mode == "bodies":
            return delivery.body
        event = delivery.event
        return items.item_body(delivery.body, delivery.seq, event.wa_id, event.user_id)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` asks to wait (delay-seconds or an HTTP date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:MAX_ERROR_CHARS]
