"""`forward_mode=items`: one body per item, in the format it arrived in, the item's own bytes
unchanged; what `normalise` reads from each is exactly that one event."""

from __future__ import annotations

import json

import msgspec
import pytest

from app.items import ItemNotFound, item_body
from app.normalise import STORED, normalise
from tests.corpus import CASES, DE, ES, MX, Case

STORED_CASES = [case for case in CASES if case.outcome == STORED and case.events]


@pytest.mark.parametrize("case", STORED_CASES, ids=[case.name for case in STORED_CASES])
def test_each_item_body_normalises_to_exactly_its_event(case: Case) -> None:
    events = normalise(case.body).events
    for event in events:
        body = item_body(case.body, event.seq, event.wa_id, event.user_id)
        again = normalise(body)
        assert again.outcome == STORED and again.format == normalise(case.body).format
        assert again.events == [msgspec.structs.replace(event, seq=0)]
        assert event.payload.encode() in body  # the item's own bytes, not re-encoded
        json.loads(body)  # and the envelope around them is JSON


def _message(sender: str, n: int) -> dict[str, object]:
    return {
        "from": sender,
        "id": f"wamid.{sender}.{n}",
        "timestamp": "1780000000",
        "type": "text",
        "text": {"body": f"Nachricht {n}"},
    }


def _status(recipient: str, n: int) -> dict[str, object]:
    return {
        "id": f"wamid.out.{recipient}.{n}",
        "status": "delivered",
        "timestamp": "1780000100",
        "recipient_id": recipient,
    }


def _value(phone_number_id: str, **arrays: object) -> dict[str, object]:
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "4989123456789", "phone_number_id": phone_number_id},
        **arrays,
    }


def _contact(wa_id: str, name: str) -> dict[str, object]:
    """As Cloud sends them since 2026: with the business-scoped user id."""
    return {"profile": {"name": name}, "wa_id": wa_id, "user_id": f"XX.{wa_id}"}


BATCH = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "waba-1",
            "changes": [
                {
                    "value": _value(
                        "pn-1",
                        contacts=[_contact(DE, "Clara"), _contact(ES, "Lucía")],
                        messages=[_message(DE, 1), _message(ES, 1), _message(DE, 2)],
                    ),
                    "field": "messages",
                },
                {
                    "value": _value(
                        "pn-1",
                        contacts=[_contact(MX, "Mateo"), _contact(DE, "Clara")],
                        statuses=[_status(MX, 1), _status(DE, 1)],
                    ),
                    "field": "messages",
                },
            ],
        },
        {
            "id": "waba-2",
            "changes": [
                {
                    "value": _value(
                        "pn-2",
                        statuses=[_status(ES, 2)],
                        contacts=[_contact(ES, "Lucía"), _contact(MX, "Mateo")],
                        messages=[_message(MX, 1)],
                    ),
                    "field": "messages",
                },
            ],
        },
        {
            "id": "waba-3",
            "time": 1780000400,
            "changes": [
                {"value": {"event": "PARTNER_ADDED"}, "field": "account_update"},
                {
                    "value": _value(
                        "pn-3", messages=[_message(ES, 3)], contacts=[_contact(ES, "Lucía")]
                    ),
                    "field": "messages",
                },
            ],
        },
    ],
}


def test_a_batched_body_becomes_one_minimal_body_per_item_in_order() -> None:
    body = json.dumps(BATCH, ensure_ascii=False, indent=1).encode()  # pretty: bytes must survive
    events = normalise(body).events
    items = [json.loads(item_body(body, e.seq, e.wa_id, e.user_id)) for e in events]

    assert [e.message_id or e.type for e in events] == [
        f"wamid.{DE}.1",
        f"wamid.{ES}.1",
        f"wamid.{DE}.2",
        f"wamid.out.{MX}.1",
        f"wamid.out.{DE}.1",
        f"wamid.out.{ES}.2",
        f"wamid.{MX}.1",
        "account_update",
        f"wamid.{ES}.3",
    ]
    first = items[1]
    assert first == {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "waba-1",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "4989123456789",
                                "phone_number_id": "pn-1",
                            },
                            "contacts": [_contact(ES, "Lucía")],
                            "messages": [_message(ES, 1)],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    # A status keeps its recipient's contact, and only that one.
    assert items[5]["entry"][0]["changes"][0]["value"] == _value(
        "pn-2", statuses=[_status(ES, 2)], contacts=[_contact(ES, "Lucía")]
    )
    # Another field's change is the item itself, with its entry's time.
    assert items[7] == {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "waba-3",
                "time": 1780000400,
                "changes": [{"value": {"event": "PARTNER_ADDED"}, "field": "account_update"}],
            }
        ],
    }
    for event, item in zip(events, items, strict=True):
        (again,) = normalise(json.dumps(item).encode()).events
        assert again.message_id == event.message_id and again.kind == event.kind


def test_on_premise_keeps_the_array_of_the_item_and_its_contact() -> None:
    body = json.dumps(
        {
            "contacts": [_contact(DE, "Clara"), _contact(ES, "Lucía")],
            "messages": [_message(DE, 1), _message(ES, 1)],
            "statuses": [_status(MX, 1)],
        }
    ).encode()
    events = normalise(body).events
    items = [json.loads(item_body(body, e.seq, e.wa_id, e.user_id)) for e in events]
    assert items == [
        {"contacts": [_contact(DE, "Clara")], "messages": [_message(DE, 1)]},
        {"contacts": [_contact(ES, "Lucía")], "messages": [_message(ES, 1)]},
        {"statuses": [_status(MX, 1)]},  # no contact of its recipient in the body: none
    ]


def test_a_position_past_the_last_item_is_refused() -> None:
    body = json.dumps(BATCH).encode()
    count = len(normalise(body).events)
    item_body(body, count - 1, ES, None)
    with pytest.raises(ItemNotFound):
        item_body(body, count, None, None)
