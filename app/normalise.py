"""Turn one webhook body into its events, following docs/protocol.md §6 rule by rule.

`normalise` never raises on input: a body that is not usable is "quarantined", an object of
neither format is "unknown", and both keep no events. One broken container anywhere
quarantines the whole body, so no half-extracted body is ever acknowledged as stored.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from app import payloads as p

STORED: Final = "stored"
UNKNOWN: Final = "unknown"
QUARANTINED: Final = "quarantined"
TOO_MANY_EVENTS: Final = "too_many_events"


class Event(msgspec.Struct, frozen=True):
    seq: int
    kind: str  # message | status | error | other
    type: str | None
    message_id: str | None
    wa_id: str | None
    phone_number_id: str | None
    waba_id: str | None
    event_ts: datetime | None
    payload: str  # the element's JSON exactly as received


class Normalised(msgspec.Struct, frozen=True):
    outcome: str
    events: list[Event]


_QUARANTINED = Normalised(QUARANTINED, [])
_UNKNOWN = Normalised(UNKNOWN, [])
_TOO_MANY_EVENTS = Normalised(TOO_MANY_EVENTS, [])


class _BrokenContainer(Exception):
    """A container of the skeleton has the wrong JSON type."""


class _TooManyEvents(Exception):
    """The body holds more events than one body may bring."""


def _make_room(events: list[Event], count: int, max_events: int) -> None:
    if len(events) + count > max_events:
        raise _TooManyEvents


def normalise(body: bytes, max_events: int = sys.maxsize) -> Normalised:
    """The body's outcome and events; past `max_events` events, none are kept (the body is
    stored raw as `too_many_events`), and the walk stops there."""
    try:
        # msgspec skips unknown fields without checking their UTF-8, so check it once here.
        body.decode("utf-8")
        members = p.object_decoder.decode(body)
        if "object" in members or "entry" in members:
            if p.any_decoder.decode(members.get("object", b"null")) != p.CLOUD_OBJECT:
                return _UNKNOWN
            events = _walk_cloud(members, max_events)
        elif p.ONPREM_KEYS.isdisjoint(members):
            return _UNKNOWN
        else:
            events = []
            _walk_value(members, events, max_events, phone_number_id=None, waba_id=None)
    # RecursionError: nesting deeper than the decoder follows, which no WhatsApp body has.
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, _BrokenContainer):
        return _QUARANTINED
    except _TooManyEvents:
        return _TOO_MANY_EVENTS
    return Normalised(STORED, events)


def _walk_cloud(members: dict[str, msgspec.Raw], max_events: int) -> list[Event]:
    events: list[Event] = []
    entries = p.entries_decoder.decode(members["entry"]) if "entry" in members else []
    for entry in entries:
        waba_id = _text(entry.id)
        for change in entry.changes:
            if not len(change.value):
                raise _BrokenContainer
            value = p.object_decoder.decode(change.value)
            if change.field == "messages":
                _walk_value(value, events, max_events, _phone_number_id(value), waba_id)
            else:
                _make_room(events, 1, max_events)
                # docs/protocol.md §6: other fields name their business by the WABA (entry id) only.
                events.append(
                    Event(
                        seq=len(events),
                        kind="other",
                        type=_text(change.field),
                        message_id=None,
                        wa_id=None,
                        phone_number_id=None,
                        waba_id=waba_id,
                        event_ts=_timestamp(entry.time),
                        payload=_json(change.value),
                    )
                )
    return events


def _walk_value(
    members: dict[str, msgspec.Raw],
    events: list[Event],
    max_events: int,
    phone_number_id: str | None,
    waba_id: str | None,
) -> None:
    """An On-Premise body, or the `value` of a Cloud `messages` change: keys in body order."""
    for key, raw in members.items():
        if key == "messages":
            items = p.array_decoder.decode(raw)
            _make_room(events, len(items), max_events)
            for item in items:
                message = p.message_decoder.decode(item)
                events.append(
                    Event(
                        seq=len(events),
                        kind="message",
                        type=_text(message.type),
                        message_id=_text(message.id),
                        wa_id=_text(message.from_),
                        phone_number_id=phone_number_id,
                        waba_id=waba_id,
                        event_ts=_timestamp(message.timestamp),
                        payload=_json(item),
                    )
                )
        elif key == "statuses":
            items = p.array_decoder.decode(raw)
            _make_room(events, len(items), max_events)
            for item in items:
                status = p.status_decoder.decode(item)
                recipient = status.recipient_id
                if recipient is None and isinstance(status.message, dict):
                    recipient = status.message.get("recipient_id")
                events.append(
                    Event(
                        seq=len(events),
                        kind="status",
                        type=_text(status.status),
                        message_id=_text(status.id),
                        wa_id=_text(recipient),
                        phone_number_id=phone_number_id,
                        waba_id=waba_id,
                        event_ts=_timestamp(status.timestamp),
                        payload=_json(item),
                    )
                )
        elif key == "errors":
            items = p.array_decoder.decode(raw)
            _make_room(events, len(items), max_events)
            for item in items:
                error = p.error_decoder.decode(item)
                events.append(
                    Event(
                        seq=len(events),
                        kind="error",
                        type=_text(error.code),
                        message_id=None,
                        wa_id=None,
                        phone_number_id=phone_number_id,
                        waba_id=waba_id,
                        event_ts=None,
                        payload=_json(item),
                    )
                )
        elif key == "contacts":
            p.objects_decoder.decode(raw)  # describes senders: checked, no events


def _phone_number_id(value: dict[str, msgspec.Raw]) -> str | None:
    raw = value.get("metadata")
    if raw is None:
        return None
    metadata = p.any_decoder.decode(raw)  # not a container of the skeleton: any type is tolerated
    return _text(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None


def _json(raw: msgspec.Raw) -> str:
    return bytes(raw).decode("utf-8")


def _text(value: Any) -> str | None:
    """A leaf as text for a text column: ids arrive as strings or numbers."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = str(value)
    else:
        text = msgspec.json.encode(value).decode("utf-8")
    if text.isascii() and "\x00" not in text:
        return text
    # PostgreSQL text holds neither NUL nor lone surrogates (JSON can escape both).
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


_MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z, the last second Python's datetime holds


def _timestamp(value: Any) -> datetime | None:
    """Unix seconds as a string or a number; anything else is no timestamp."""
    if isinstance(value, str):
        try:
            value = float(value) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value <= _MAX_EPOCH:  # also rejects NaN
        return None
    return datetime.fromtimestamp(value, UTC)
