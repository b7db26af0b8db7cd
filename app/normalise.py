"""Turn one webhook body into its events, following docs/protocol.md §6 rule by rule.

`normalise` never raises on input: a body that is not usable is "quarantined", an object of
neither format is "unknown", and both keep no events. One broken container anywhere
quarantines the whole body, so no half-extracted body is ever acknowledged as stored.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from app import payloads as p

STORED: Final = "stored"
UNKNOWN: Final = "unknown"
QUARANTINED: Final = "quarantined"
TOO_MANY_EVENTS: Final = "too_many_events"
CLOUD: Final = "cloud"
ONPREM: Final = "onprem"


class Event(msgspec.Struct, frozen=True):
    seq: int
    kind: str  # message | status | error | other | echo | call
    type: str | None
    message_id: str | None  # the element's own id: a message, status, echo or call id
    wa_id: str | None
    user_id: str | None  # the business-scoped user id (BSUID), Cloud only
    group_id: str | None  # the group of a group message or status, Cloud only
    phone_number_id: str | None
    waba_id: str | None
    event_ts: datetime | None
    payload: str  # the element's JSON exactly as received

    @property
    def contact(self) -> str | None:
        return contact_of(self.wa_id, self.user_id, self.group_id)


def contact_of(wa_id: str | None, user_id: str | None, group_id: str | None) -> str | None:
    """docs/protocol.md §6: whom the event's conversation is with. A group event's group, else
    the user by phone number (`wa_id`), else by business-scoped user id; None for none of them.

    The one definition: per-contact work (ordering, routing) keys by this, never by `wa_id`.
    """
    return group_id or wa_id or user_id


class Normalised(msgspec.Struct, frozen=True):
    outcome: str
    events: list[Event]
    format: str = ""  # "cloud" or "onprem" for a stored body, else empty


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
            return Normalised(STORED, _walk_cloud(members, max_events), CLOUD)
        if p.ONPREM_KEYS.isdisjoint(members):
            return _UNKNOWN
        events: list[Event] = []
        _walk_value(members, CHAT_ARRAYS, events, max_events, None, None)
        return Normalised(STORED, events, ONPREM)
    # RecursionError: nesting deeper than the decoder follows, which no WhatsApp body has.
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, _BrokenContainer):
        return _QUARANTINED
    except _TooManyEvents:
        return _TOO_MANY_EVENTS


# Each array of a walked value gives one event per element: its kind, and how the element's
# leaves are read, as (type, id, wa_id, user_id, group_id, timestamp). docs/protocol.md §6.
_Leaves = tuple[Any, Any, Any, Any, Any, Any]
Arrays = dict[str, tuple[str, Callable[[msgspec.Raw], _Leaves]]]


def _message(item: msgspec.Raw) -> _Leaves:
    m = p.message_decoder.decode(item)
    return m.type, m.id, m.from_, m.from_user_id, m.group_id, m.timestamp


def _status(item: msgspec.Raw) -> _Leaves:
    s = p.status_decoder.decode(item)
    recipient = s.recipient_id
    if recipient is None and isinstance(s.message, dict):
        recipient = s.message.get("recipient_id")
    group_id = s.recipient_id if s.recipient_type == "group" else None
    return s.status, s.id, recipient, s.recipient_user_id, group_id, s.timestamp


def _error(item: msgspec.Raw) -> _Leaves:
    return p.error_decoder.decode(item).code, None, None, None, None, None


def _echo(item: msgspec.Raw) -> _Leaves:
    e = p.echo_decoder.decode(item)
    return e.type, e.id, e.to, e.to_user_id, e.group_id, e.timestamp


def _call(item: msgspec.Raw) -> _Leaves:
    c = p.call_decoder.decode(item)
    # The user is the caller, or the callee of a call the business made.
    if c.direction == "BUSINESS_INITIATED":
        return c.event, c.id, c.to, c.to_user_id, None, c.timestamp
    return c.event, c.id, c.from_, c.from_user_id, None, c.timestamp


# An On-Premise body, and the value of a Cloud `messages` change (app/items.py walks the same).
CHAT_ARRAYS: Final[Arrays] = {
    "messages": ("message", _message),
    "statuses": ("status", _status),
    "errors": ("error", _error),
}
# Other Cloud fields whose value holds elements with ids of their own (calls, and the messages
# the business sent from the WhatsApp Business app). Their value is walked when it holds any of
# these arrays; otherwise the change is one `other` event like any other field's.
_ELEMENT_FIELDS: Final[dict[str, Arrays]] = {
    "calls": {"calls": ("call", _call), "statuses": ("call", _status), "errors": ("error", _error)},
    "smb_message_echoes": {"message_echoes": ("echo", _echo), "errors": ("error", _error)},
}


def _walk_cloud(members: dict[str, msgspec.Raw], max_events: int) -> list[Event]:
    events: list[Event] = []
    entries = p.entries_decoder.decode(members["entry"]) if "entry" in members else []
    for entry in entries:
        waba_id = leaf_text(entry.id)
        for change in entry.changes:
            if not len(change.value):
                raise _BrokenContainer
            value = p.object_decoder.decode(change.value)
            phone_number_id = _phone_number_id(value)
            if change.field == "messages":
                _walk_value(value, CHAT_ARRAYS, events, max_events, phone_number_id, waba_id)
            elif (arrays := element_arrays(change.field, value)) is not None:
                _walk_value(value, arrays, events, max_events, phone_number_id, waba_id)
            else:
                _make_room(events, 1, max_events)
                events.append(_other(len(events), change, entry, phone_number_id, waba_id))
    return events


def element_arrays(field: Any, value: dict[str, msgspec.Raw]) -> Arrays | None:
    """The arrays to walk in a change of `field` (a leaf of any type), or None when the
    change is one `other` event: another field, or a value holding none of its arrays."""
    arrays = _ELEMENT_FIELDS.get(field) if isinstance(field, str) else None
    if arrays is None or arrays.keys().isdisjoint(value):
        return None
    return arrays


def _walk_value(
    members: dict[str, msgspec.Raw],
    arrays: Arrays,
    events: list[Event],
    max_events: int,
    phone_number_id: str | None,
    waba_id: str | None,
) -> None:
    """An On-Premise body, or the value of a walked Cloud change: its keys in body order."""
    for key, raw in members.items():
        element = arrays.get(key)
        if element is not None:
            kind, read = element
            items = p.array_decoder.decode(raw)
            _make_room(events, len(items), max_events)
            for item in items:
                type_, id_, wa_id, user_id, group_id, ts = read(item)
                # Positional, in field order: this runs for every element, on the hot path.
                events.append(
                    Event(
                        len(events),
                        kind,
                        leaf_text(type_),
                        leaf_text(id_),
                        leaf_text(wa_id),
                        None if user_id is None else leaf_text(user_id),  # mostly absent: no call
                        None if group_id is None else leaf_text(group_id),
                        phone_number_id,
                        waba_id,
                        _timestamp(ts),
                        _json(item),
                    )
                )
        elif key == "contacts":
            p.objects_decoder.decode(raw)  # describes senders: checked, no events


def _other(
    seq: int,
    change: p.Change,
    entry: p.Entry,
    phone_number_id: str | None,
    waba_id: str | None,
) -> Event:
    """One event for a whole change of another field: it names no user and has no id (§6)."""
    return Event(
        seq=seq,
        kind="other",
        type=leaf_text(change.field),
        message_id=None,
        wa_id=None,
        user_id=None,
        group_id=None,
        phone_number_id=phone_number_id,
        waba_id=waba_id,
        event_ts=_timestamp(entry.time),
        payload=_json(change.value),
    )


def _phone_number_id(value: dict[str, msgspec.Raw]) -> str | None:
    raw = value.get("metadata")
    if raw is None:
        return None
    metadata = p.any_decoder.decode(raw)  # not a container of the skeleton: any type is tolerated
    return leaf_text(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None


def _json(raw: msgspec.Raw) -> str:
    return bytes(raw).decode("utf-8")


def leaf_text(value: Any) -> str | None:
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
