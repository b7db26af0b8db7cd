"""Row building: uuid7 ids, dedup keys (spec section 8, docs/protocol.md §7), the contact of an
event (docs/protocol.md §6), and the request as COPY rows."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from app.normalise import Event, contact_of, normalise
from app.records import EVENT_COLUMNS, ID_KINDS, REQUEST_COLUMNS, dedup_key, incoming, uuid7

PNID = "190011223344556"
PNID_OTHER = "190011223344557"
WABA = "104455667788990"
WAMID = "wamid.HBgNNDkxNTE5ODc2NTQzMhUCABIYFDNBMDFFQkQ2NjRFRkY5QjE0QTc2AA=="
WACID = "wacid.HBgNNDkxNTE5ODc2NTQzMhUCABEYIEE1QzM3OTlFMzhGNjQ5QjA"
SHA_A = hashlib.sha256(b"a").digest()
SHA_B = hashlib.sha256(b"b").digest()


def _ms(ns: int) -> int:
    return ns // 1_000_000


def _unix_ms(value: uuid.UUID) -> int:
    return value.int >> 80


# --- bodies ----------------------------------------------------------------------------------


def cloud(value: dict[str, Any], field: str = "messages") -> bytes:
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA, "changes": [{"field": field, "value": value}]}],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def cloud_value(phone_number_id: str | None = PNID, **arrays: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp"}
    if phone_number_id is not None:
        value["metadata"] = {
            "display_phone_number": "4989123456789",
            "phone_number_id": phone_number_id,
        }
    value.update(arrays)
    return value


def text_message(message_id: str = WAMID) -> dict[str, Any]:
    return {
        "from": "4915198765432",
        "id": message_id,
        "timestamp": "1780000000",
        "text": {"body": "Hallo"},
        "type": "text",
    }


def status(state: str, message_id: str = WAMID) -> dict[str, Any]:
    return {
        "id": message_id,
        "status": state,
        "timestamp": "1780000100",
        "recipient_id": "4915198765432",
    }


def onprem(**arrays: Any) -> bytes:
    return json.dumps(arrays).encode()


def only_event(body: bytes) -> Event:
    normalised = normalise(body)
    assert normalised.outcome == "stored", body
    (event,) = normalised.events
    return event


def event(
    kind: str = "message",
    type: str | None = "text",
    message_id: str | None = WAMID,
    phone_number_id: str | None = PNID,
    seq: int = 0,
    wa_id: str | None = "4915198765432",
    user_id: str | None = None,
    group_id: str | None = None,
) -> Event:
    return Event(
        seq=seq,
        kind=kind,
        type=type,
        message_id=message_id,
        wa_id=wa_id,
        user_id=user_id,
        group_id=group_id,
        phone_number_id=phone_number_id,
        waba_id=WABA,
        event_ts=None,
        payload="{}",
    )


# --- uuid7 -----------------------------------------------------------------------------------


def test_uuid7_version_variant_and_timestamp() -> None:
    before = _ms(time.time_ns())
    value = uuid7()
    after = _ms(time.time_ns())
    assert isinstance(value, uuid.UUID)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 76 & 0xF == 7
    assert value.int >> 62 & 0b11 == 0b10
    assert before <= _unix_ms(value) <= after


def test_uuid7_ids_are_unique() -> None:
    ids = [uuid7() for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    assert all(value.version == 7 and value.variant == uuid.RFC_4122 for value in ids)


def test_uuid7_random_bits_alone_are_unique() -> None:
    # Ids of one millisecond share their 48 time bits: uniqueness rests on the 74 random ones.
    ids = [uuid7() for _ in range(1_000)]
    randoms = {value.int & ((1 << 76) - 1) for value in ids}
    assert len(randoms) == len(ids)


def test_uuid7_ids_of_later_milliseconds_sort_later() -> None:
    first = uuid7()
    first_ms = _unix_ms(first)
    for _ in range(10_000_000):
        if _ms(time.time_ns()) > first_ms:
            break
    else:
        pytest.fail("the clock did not advance a millisecond")
    second = uuid7()
    assert _unix_ms(second) > first_ms
    assert first < second
    assert str(first) < str(second)
    assert first.bytes < second.bytes


# --- dedup_key -------------------------------------------------------------------------------


def test_dedup_key_is_16_bytes() -> None:
    key = dedup_key(event(), "shop", SHA_A)
    assert isinstance(key, bytes)
    assert len(key) == 16


def test_cloud_message_key_ignores_channel_within_a_business_number() -> None:
    body = cloud(cloud_value(messages=[text_message()]))
    message = only_event(body)
    assert message.phone_number_id == PNID
    # The same message redelivered to another channel, in other bytes: one key.
    contact = {"wa_id": "4915198765432", "profile": {"name": "Clara"}}
    other_body = cloud(cloud_value(contacts=[contact], messages=[text_message()]))
    assert other_body != body
    redelivered = only_event(other_body)
    key = dedup_key(message, "shop-de", hashlib.sha256(body).digest())
    assert key == dedup_key(redelivered, "shop-es", hashlib.sha256(other_body).digest())


def test_cloud_message_key_differs_by_business_number() -> None:
    ours = only_event(cloud(cloud_value(PNID, messages=[text_message()])))
    theirs = only_event(cloud(cloud_value(PNID_OTHER, messages=[text_message()])))
    assert ours.message_id == theirs.message_id
    assert dedup_key(ours, "shop", SHA_A) != dedup_key(theirs, "shop", SHA_A)


def test_onprem_message_key_is_scoped_by_channel() -> None:
    message = only_event(onprem(messages=[text_message()]))
    assert message.phone_number_id is None
    assert dedup_key(message, "shop", SHA_A) == dedup_key(message, "shop", SHA_B)
    assert dedup_key(message, "shop", SHA_A) != dedup_key(message, "shop-es", SHA_A)


def test_cloud_without_metadata_falls_back_to_channel() -> None:
    message = only_event(cloud(cloud_value(None, messages=[text_message()])))
    assert message.phone_number_id is None
    assert dedup_key(message, "a", SHA_A) == dedup_key(message, "a", SHA_B)
    assert dedup_key(message, "a", SHA_A) != dedup_key(message, "b", SHA_A)


def test_number_scope_and_channel_scope_never_collide() -> None:
    # A channel named like a phone number id is not that business number.
    with_number = event(phone_number_id=PNID)
    without = event(phone_number_id=None)
    assert dedup_key(with_number, "x", SHA_A) != dedup_key(without, PNID, SHA_A)


def test_status_types_get_their_own_keys() -> None:
    body = cloud(cloud_value(statuses=[status("sent"), status("delivered"), status("read")]))
    events = normalise(body).events
    assert [e.type for e in events] == ["sent", "delivered", "read"]
    assert {e.message_id for e in events} == {WAMID}
    keys = {dedup_key(e, "shop", SHA_A) for e in events}
    assert len(keys) == 3
    # ...and each is stable across a redelivery of that one status.
    for e in events:
        again = only_event(cloud(cloud_value(statuses=[status(e.type or "")])))
        assert dedup_key(again, "other-channel", SHA_B) == dedup_key(e, "shop", SHA_A)


def test_message_and_status_with_the_same_id_differ() -> None:
    as_message = event(kind="message", type="sent")
    as_status = event(kind="status", type="sent")
    assert dedup_key(as_message, "shop", SHA_A) != dedup_key(as_status, "shop", SHA_A)


def test_message_types_differ() -> None:
    text = event(type="text")
    image = event(type="image")
    assert dedup_key(text, "shop", SHA_A) != dedup_key(image, "shop", SHA_A)


def test_message_key_ignores_seq_and_body() -> None:
    first = event(seq=0)
    later = event(seq=5)
    assert dedup_key(first, "shop", SHA_A) == dedup_key(later, "shop", SHA_B)


def test_events_without_id_key_by_channel_body_and_seq() -> None:
    body = onprem(errors=[{"code": 1000, "title": "one"}, {"code": 1000, "title": "one"}])
    sha = hashlib.sha256(body).digest()
    first, second = normalise(body).events
    assert (first.kind, first.message_id, second.seq) == ("error", None, 1)
    key = dedup_key(first, "shop", sha)
    assert key == dedup_key(first, "shop", sha)
    assert len(key) == 16
    assert key != dedup_key(first, "shop", SHA_B)  # other bytes
    assert key != dedup_key(first, "shop-es", sha)  # other channel
    assert key != dedup_key(second, "shop", sha)  # same error, other position


def test_other_field_events_key_by_body() -> None:
    body = cloud({"event": "FLAGGED"}, field="account_update")
    other = only_event(body)
    assert (other.kind, other.type, other.message_id) == ("other", "account_update", None)
    sha = hashlib.sha256(body).digest()
    assert dedup_key(other, "shop", sha) == dedup_key(other, "shop", sha)
    assert dedup_key(other, "shop", sha) != dedup_key(other, "shop", SHA_A)
    assert dedup_key(other, "shop", sha) != dedup_key(other, "shop2", sha)
    assert dedup_key(other, "shop", sha) != dedup_key(
        msgspec.structs.replace(other, seq=1), "shop", sha
    )


@pytest.mark.parametrize("kind", ["error", "other"])
def test_id_less_kinds_ignore_a_stray_message_id(kind: str) -> None:
    # Only messages and statuses are keyed by id: an error is a body event even with an id.
    e = event(kind=kind, message_id=WAMID)
    assert dedup_key(e, "shop", SHA_A) != dedup_key(e, "shop", SHA_B)


def test_message_without_id_keys_by_body() -> None:
    no_id = event(message_id=None)
    assert dedup_key(no_id, "shop", SHA_A) == dedup_key(no_id, "shop", SHA_A)
    assert dedup_key(no_id, "shop", SHA_A) != dedup_key(no_id, "shop", SHA_B)


def test_id_kinds_are_the_kinds_with_ids_of_their_own() -> None:
    assert {"message", "status", "echo", "call"} == ID_KINDS


def test_cloud_call_key_ignores_channel_and_body_within_a_business_number() -> None:
    def calls_body(*calls: dict[str, Any], contacts: bool = False) -> bytes:
        value = cloud_value(calls=list(calls))
        if contacts:
            value["contacts"] = [{"wa_id": "4915198765432", "profile": {"name": "Clara"}}]
        return cloud(value, field="calls")

    connect = {"id": WACID, "from": "4915198765432", "event": "connect", "timestamp": "1"}
    terminate = {**connect, "event": "terminate", "status": "COMPLETED"}
    first = normalise(calls_body(connect, terminate)).events
    assert [(e.kind, e.type, e.message_id) for e in first] == [
        ("call", "connect", WACID),
        ("call", "terminate", WACID),
    ]
    # The terminate redelivered alone, in other bytes, to another channel: the same key.
    again = only_event(calls_body(terminate, contacts=True))
    assert dedup_key(again, "shop-es", SHA_B) == dedup_key(first[1], "shop-de", SHA_A)
    # connect and terminate of one call are two events.
    assert dedup_key(first[0], "shop", SHA_A) != dedup_key(first[1], "shop", SHA_A)


def test_echo_key_ignores_channel_and_body_within_a_business_number() -> None:
    echo = {"from": "4989123456789", "to": "4915198765432", "id": WAMID, "type": "text"}
    body = cloud(cloud_value(message_echoes=[echo]), field="smb_message_echoes")
    first = only_event(body)
    assert (first.kind, first.type, first.message_id, first.phone_number_id) == (
        "echo",
        "text",
        WAMID,
        PNID,
    )
    spaced = json.dumps(json.loads(body), indent=1).encode()
    assert dedup_key(only_event(spaced), "b", SHA_B) == dedup_key(first, "a", SHA_A)
    # Another business number, or none (then the channel scopes it), is another key.
    theirs = only_event(cloud(cloud_value(PNID_OTHER, message_echoes=[echo]), "smb_message_echoes"))
    assert dedup_key(theirs, "a", SHA_A) != dedup_key(first, "a", SHA_A)
    unscoped = only_event(cloud(cloud_value(None, message_echoes=[echo]), "smb_message_echoes"))
    assert dedup_key(unscoped, "a", SHA_A) == dedup_key(unscoped, "a", SHA_B)
    assert dedup_key(unscoped, "a", SHA_A) != dedup_key(unscoped, "b", SHA_A)


@pytest.mark.parametrize(
    ("kind", "type"),
    [("message", "text"), ("status", "sent"), ("status", "text"), ("call", "text")],
)
def test_an_echo_never_collides_with_another_kind_of_the_same_id(kind: str, type: str) -> None:
    # The business's own message and that message's statuses share its id: the kind keeps
    # them apart, whatever their types are.
    echo = event(kind="echo", type="text")
    assert dedup_key(echo, "shop", SHA_A) != dedup_key(event(kind=kind, type=type), "shop", SHA_A)


def test_a_call_status_and_a_call_event_of_one_call_differ() -> None:
    ringing = event(kind="call", type="RINGING", message_id=WACID)
    connect = event(kind="call", type="connect", message_id=WACID)
    as_status = event(kind="status", type="RINGING", message_id=WACID)
    keys = {dedup_key(e, "shop", SHA_A) for e in (ringing, connect, as_status)}
    assert len(keys) == 3


@pytest.mark.parametrize("kind", ["echo", "call"])
def test_echoes_and_calls_without_id_key_by_body(kind: str) -> None:
    no_id = event(kind=kind, message_id=None)
    assert dedup_key(no_id, "shop", SHA_A) == dedup_key(no_id, "shop", SHA_A)
    assert dedup_key(no_id, "shop", SHA_A) != dedup_key(no_id, "shop", SHA_B)


def test_other_field_with_metadata_names_its_number_but_keys_by_body() -> None:
    value = cloud_value(user_preferences=[{"wa_id": "4915198765432", "value": "stop"}])
    body = cloud(value, field="user_preferences")
    other = only_event(body)
    assert (other.kind, other.type, other.phone_number_id) == ("other", "user_preferences", PNID)
    sha = hashlib.sha256(body).digest()
    # The number does not make it an id-keyed event: other bytes are another event.
    assert dedup_key(other, "shop", sha) != dedup_key(other, "shop", SHA_A)
    assert dedup_key(other, "shop", sha) != dedup_key(other, "shop-es", sha)


# --- contact -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wa_id", "user_id", "group_id", "contact"),
    [
        ("4915198765432", None, None, "4915198765432"),
        ("4915198765432", "DE.881203374650213", None, "4915198765432"),  # the number first
        (None, "DE.881203374650213", None, "DE.881203374650213"),  # a username user
        ("", "DE.881203374650213", None, "DE.881203374650213"),  # an empty wa_id is none
        ("4915198765432", "DE.881203374650213", "GROUP1", "GROUP1"),  # a group's conversation
        (None, None, "GROUP1", "GROUP1"),
        (None, None, None, None),  # errors and other events name nobody
    ],
)
def test_contact_of(
    wa_id: str | None, user_id: str | None, group_id: str | None, contact: str | None
) -> None:
    assert contact_of(wa_id, user_id, group_id) == contact
    e = event(wa_id=wa_id, user_id=user_id, group_id=group_id)
    assert e.contact == contact


def test_contact_of_normalised_events() -> None:
    username = {"from_user_id": "ES.119283746501928", "id": "wamid.u", "type": "text"}
    in_group = {"from": "4915198765432", "group_id": "GROUP1", "id": "wamid.g", "type": "text"}
    to_user_id = {"id": "wamid.s", "status": "read", "recipient_user_id": "DE.881203374650213"}
    to_group = {"id": "wamid.t", "status": "read", "recipient_id": "GROUP1"}
    to_group["recipient_type"] = "group"
    body = cloud(cloud_value(messages=[username, in_group], statuses=[to_user_id, to_group]))
    events = normalise(body).events
    assert [(e.wa_id, e.user_id, e.group_id) for e in events] == [
        (None, "ES.119283746501928", None),
        ("4915198765432", None, "GROUP1"),
        (None, "DE.881203374650213", None),
        ("GROUP1", None, "GROUP1"),  # recipient_id is the group's id (protocol §6)
    ]
    assert [e.contact for e in events] == [
        "ES.119283746501928",
        "GROUP1",
        "DE.881203374650213",
        "GROUP1",
    ]
    business_call = {"id": WACID, "event": "connect", "direction": "BUSINESS_INITIATED"}
    business_call |= {"from": "4989123456789", "to": "4915198765432", "to_user_id": "DE.8812"}
    user_call = {**business_call, "direction": "USER_INITIATED", "from": "4917612345678"}
    user_call["from_user_id"] = "DE.5555"
    body = cloud(cloud_value(calls=[business_call, user_call]), field="calls")
    assert [(e.wa_id, e.user_id, e.contact) for e in normalise(body).events] == [
        ("4915198765432", "DE.8812", "4915198765432"),  # the callee of the business's call
        ("4917612345678", "DE.5555", "4917612345678"),  # the caller
    ]


# --- incoming --------------------------------------------------------------------------------


def test_incoming_stored_cloud_body() -> None:
    body = cloud(cloud_value(messages=[text_message()], statuses=[status("read", "wamid.x")]))
    before = datetime.now(UTC)
    request = incoming(body, "shop")
    after = datetime.now(UTC)
    assert request.sha256 == hashlib.sha256(body).digest()
    assert request.body == body
    assert request.channel == "shop"
    assert request.outcome == "stored"
    assert len(request.events) == 2
    assert request.rows == 3
    assert request.id.version == 7
    assert before <= request.received_at <= after

    row = request.request_row()
    assert len(row) == len(REQUEST_COLUMNS)
    assert dict(zip(REQUEST_COLUMNS, row, strict=True)) == {
        "id": request.id,
        "received_at": request.received_at,
        "channel": "shop",
        "outcome": "stored",
        "sha256": request.sha256,
        "events": 2,
        "body": body,
    }

    rows = request.event_rows()
    assert len(rows) == 2
    for seq, (e, r) in enumerate(zip(request.events, rows, strict=True)):
        assert len(r) == len(EVENT_COLUMNS)
        named = dict(zip(EVENT_COLUMNS, r, strict=True))
        assert named["dedup_key"] == dedup_key(e, "shop", request.sha256)
        assert named["request_id"] == request.id
        assert named["seq"] == seq
        assert named["channel"] == "shop"
        assert named["received_at"] == request.received_at
        assert (named["kind"], named["message_id"]) == (e.kind, e.message_id)
        assert (named["wa_id"], named["user_id"], named["group_id"]) == (
            e.wa_id,
            e.user_id,
            e.group_id,
        )
    assert [dict(zip(EVENT_COLUMNS, r, strict=True))["kind"] for r in rows] == [
        "message",
        "status",
    ]


def test_event_rows_carry_user_and_group_ids() -> None:
    message = {"from_user_id": "ES.119283746501928", "group_id": "GROUP1", "id": "wamid.u"}
    request = incoming(cloud(cloud_value(messages=[message])), "shop")
    (row,) = request.event_rows()
    named = dict(zip(EVENT_COLUMNS, row, strict=True))
    assert (named["wa_id"], named["user_id"], named["group_id"]) == (
        None,
        "ES.119283746501928",
        "GROUP1",
    )
    assert EVENT_COLUMNS.index("user_id") == EVENT_COLUMNS.index("wa_id") + 1


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (b'{"hello": "world"}', "unknown"),
        (b"[1, 2]", "quarantined"),
        (b"\xff\xfe", "quarantined"),
        (b"", "quarantined"),
    ],
)
def test_incoming_without_events(body: bytes, outcome: str) -> None:
    request = incoming(body, "default")
    assert request.outcome == outcome
    assert request.events == []
    assert request.rows == 1
    assert request.sha256 == hashlib.sha256(body).digest()
    assert len(request.request_row()) == len(REQUEST_COLUMNS)
    assert request.request_row()[5] == 0
    assert request.event_rows() == []


def test_incoming_keeps_a_given_id_and_time() -> None:
    request_id = uuid7()
    received_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    request = incoming(onprem(messages=[text_message()]), "op", request_id, received_at)
    assert request.id == request_id
    assert request.received_at == received_at
    assert request.rows == 2


def test_quarantined_keeps_id_body_and_sha_without_events() -> None:
    body = onprem(messages=[text_message()], statuses=[status("sent")])
    request = incoming(body, "op")
    assert request.rows == 3
    kept = request.quarantined()
    assert kept.outcome == "quarantined"
    assert kept.events == []
    assert kept.rows == 1
    assert kept.event_rows() == []
    assert (kept.id, kept.body, kept.sha256) == (request.id, request.body, request.sha256)
    assert (kept.channel, kept.received_at) == (request.channel, request.received_at)
    row = kept.request_row()
    assert len(row) == len(REQUEST_COLUMNS)
    assert row[REQUEST_COLUMNS.index("outcome")] == "quarantined"
    assert row[REQUEST_COLUMNS.index("events")] == 0
    # The original is untouched.
    assert request.outcome == "stored"
    assert len(request.events) == 2
