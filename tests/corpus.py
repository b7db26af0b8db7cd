"""Webhook bodies as 360dialog delivers them, each with the events it must produce.

The contract is the spec's "Normalisation: exactly what becomes an event" (with sections
6-8 for the fields), with the additions docs/protocol.md §6 makes: business-scoped user ids,
groups, and calls and message echoes as events of their own. Values are invented but
shaped like real traffic: Cloud bodies are serialised the way Meta does it (compact,
non-ASCII as lower-case ``\\uXXXX``, ``/`` as ``\\/``), On-Premise bodies the way the client
does it (raw UTF-8, spaced separators).

``Case.format`` is what the body is recognised as ("quarantined" when it is not even a
JSON object); ``Case.outcome`` is what the receiver must do with it. A Cloud body with a
broken container is ``format="cloud"`` with ``outcome="quarantined"``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Expected:
    kind: str  # "message" | "status" | "error" | "other" | "echo" | "call"
    # message or echo type verbatim / status value / error code as string / call event or
    # call status / field
    type: str | None
    message_id: str | None  # the element's id; None for error/other
    # message "from"; status recipient_id, else message.recipient_id; echo "to"; call: the
    # user's side ("from", or "to" of a business-initiated call)
    wa_id: str | None
    phone_number_id: str | None  # Cloud metadata.phone_number_id of the change; else None
    # from_user_id / recipient_user_id / to_user_id (call: the user's side)
    user_id: str | None = None
    # message group_id; status recipient_id when recipient_type is "group"; echo group_id
    group_id: str | None = None


@dataclass(frozen=True)
class Case:
    name: str  # unique, used as pytest id
    format: str  # "cloud" | "onprem" | "unknown" | "quarantined"
    body: bytes  # exact bytes as they arrive
    events: tuple[Expected, ...]  # in body order
    outcome: str  # "stored" | "unknown" | "quarantined"


# --- identities -------------------------------------------------------------------------

WABA_ID = "104455667788990"
WABA_ID_ES = "104455667788991"
PHONE_NUMBER_ID = "190011223344556"
PHONE_NUMBER_ID_ES = "190011223344557"
DISPLAY_PHONE = "4989123456789"
DISPLAY_PHONE_ES = "34911234567"

DE = "4915198765432"  # Clara Fuchs, Munich
DE_NEW = "4917612345678"  # Clara's new number
DE2 = "4915712340987"  # Jonas Weber
ES = "34612345678"  # Lucía García, Madrid
MX = "5215512345678"  # Mateo Hernández
BSUID = "ES.119283746501928"  # username user without a visible number
BSUID_DE = "DE.881203374650213"
GROUP_ID = "Y2FwaV9ncm91cDo0OTg5MTIzNDU2Nzg5OjEyMDM2MzAyNTQ3ODU2MzIxMA"


def _wamid(phone: str, n: int, *, outbound: bool = False) -> str:
    """A Cloud message id: base64 of the protobuf Meta wraps around phone and key."""
    tag = (f"5A17{n:016X}" if outbound else f"3EB0{n:016X}").encode()
    raw = (
        b"\x1c\x18"
        + bytes([len(phone)])
        + phone.encode()
        + b"\x15\x02\x00"
        + (b"\x11" if outbound else b"\x12")
        + b"\x18"
        + bytes([len(tag)])
        + tag
        + b"\x00"
    )
    return "wamid." + base64.b64encode(raw).decode()


def _op_in(n: int) -> str:
    """An inbound On-Premise message id."""
    return "ABGGFRUQZ0hfAg" + base64.urlsafe_b64encode(f"in{n:07d}".encode()).decode()


def _op_out(n: int) -> str:
    """An outbound On-Premise message id (what statuses refer to)."""
    return "gBGGFRUQZ0hfAg" + base64.urlsafe_b64encode(f"out{n:06d}".encode()).decode()


def _cloud_media(n: int) -> str:
    return str(1498765432109000 + n)


def _op_media(n: int) -> str:
    h = hashlib.md5(f"media{n}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _sha_hex(n: int) -> str:
    return hashlib.sha256(f"blob{n}".encode()).hexdigest()


def _sha_b64(n: int) -> str:
    return base64.b64encode(hashlib.sha256(f"blob{n}".encode()).digest()).decode()


# --- serialisers and envelopes -----------------------------------------------------------


def _cloud_bytes(body: object) -> bytes:
    # Meta's serialiser: compact, non-ASCII as lower-case \uXXXX, "/" escaped as "\/".
    text = json.dumps(body, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def _onprem_bytes(body: object) -> bytes:
    # The On-Premise client sends raw UTF-8 with ", " / ": " separators.
    return json.dumps(body, ensure_ascii=False).encode()


def _cloud(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": list(entries), **extra}


def _entry(*changes: Any, waba_id: str = WABA_ID, time: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": waba_id}
    if time is not None:
        entry["time"] = time
    entry["changes"] = list(changes)
    return entry


def _change(field: str, value: Any) -> dict[str, Any]:
    # Meta writes "value" before "field".
    return {"value": value, "field": field}


def _value(
    *,
    phone_number_id: str = PHONE_NUMBER_ID,
    display_phone_number: str = DISPLAY_PHONE,
    **arrays: Any,
) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
        **arrays,
    }


def _contact(wa_id: str, name: str) -> dict[str, Any]:
    return {"profile": {"name": name}, "wa_id": wa_id}


def _cloud_messages(*messages: dict[str, Any], contact: dict[str, Any] | None = None) -> bytes:
    """One Cloud change of field "messages" holding `messages` (and one contact)."""
    contacts = [contact or _contact(DE, "Clara Fuchs")]
    return _cloud_bytes(
        _cloud(_entry(_change("messages", _value(contacts=contacts, messages=list(messages)))))
    )


def _cloud_statuses(*statuses: dict[str, Any]) -> bytes:
    return _cloud_bytes(_cloud(_entry(_change("messages", _value(statuses=list(statuses))))))


def _cloud_other(field: str, value: Any, *, time: int | None = 1780000400) -> bytes:
    return _cloud_bytes(_cloud(_entry(_change(field, value), time=time)))


def _onprem_messages(*messages: dict[str, Any], contact: dict[str, Any] | None = None) -> bytes:
    return _onprem_bytes(
        {"contacts": [contact or _contact(DE, "Clara Fuchs")], "messages": list(messages)}
    )


# --- expected events ---------------------------------------------------------------------


def _m(
    type_: str | None,
    message_id: str | None,
    wa_id: str | None,
    pnid: str | None = None,
    *,
    user_id: str | None = None,
    group_id: str | None = None,
) -> Expected:
    return Expected("message", type_, message_id, wa_id, pnid, user_id, group_id)


def _s(
    status: str | None,
    message_id: str | None,
    wa_id: str | None,
    pnid: str | None = None,
    *,
    user_id: str | None = None,
    group_id: str | None = None,
) -> Expected:
    return Expected("status", status, message_id, wa_id, pnid, user_id, group_id)


def _e(code: str | None, pnid: str | None = None) -> Expected:
    return Expected("error", code, None, None, pnid)


def _o(field: str, pnid: str | None = None) -> Expected:
    return Expected("other", field, None, None, pnid)


def _echo(
    type_: str | None,
    message_id: str | None,
    wa_id: str | None,
    pnid: str | None,
    *,
    user_id: str | None = None,
    group_id: str | None = None,
) -> Expected:
    return Expected("echo", type_, message_id, wa_id, pnid, user_id, group_id)


def _call(
    type_: str | None,
    call_id: str | None,
    wa_id: str | None,
    pnid: str | None,
    *,
    user_id: str | None = None,
) -> Expected:
    return Expected("call", type_, call_id, wa_id, pnid, user_id)


P = PHONE_NUMBER_ID
P_ES = PHONE_NUMBER_ID_ES


def _cloud_case(name: str, body: bytes, *events: Expected) -> Case:
    return Case(name, "cloud", body, events, "stored")


def _onprem_case(name: str, body: bytes, *events: Expected) -> Case:
    return Case(name, "onprem", body, events, "stored")


def _unknown(name: str, body: bytes) -> Case:
    return Case(name, "unknown", body, (), "unknown")


def _quarantined(name: str, body: bytes, fmt: str = "quarantined") -> Case:
    return Case(name, fmt, body, (), "quarantined")


# --- public builders (load tests use these) ----------------------------------------------


def cloud_text(message_id: str, phone_number_id: str = PHONE_NUMBER_ID, sender: str = DE) -> bytes:
    """A Cloud body with one inbound text message, from `sender` (a wa_id)."""
    return _cloud_bytes(
        _cloud(
            _entry(
                _change(
                    "messages",
                    _value(
                        phone_number_id=phone_number_id,
                        contacts=[_contact(sender, "Clara Fuchs")],
                        messages=[
                            {
                                "from": sender,
                                "id": message_id,
                                "timestamp": "1780000000",
                                "text": {"body": "Hallo! Haben Sie am Samstag geöffnet? 😊"},
                                "type": "text",
                            }
                        ],
                    ),
                )
            )
        )
    )


def onprem_text(message_id: str) -> bytes:
    """An On-Premise body with one inbound text message."""
    return _onprem_messages(
        {
            "from": DE,
            "id": message_id,
            "text": {"body": "Haben Sie samstags geöffnet?"},
            "timestamp": "1717400000",
            "type": "text",
        }
    )


CLOUD_TEXT: bytes = cloud_text(_wamid(DE, 1))
ONPREM_TEXT: bytes = onprem_text(_op_in(1))
CLOUD_STATUS: bytes = _cloud_statuses(
    {
        "id": _wamid(DE, 1, outbound=True),
        "status": "read",
        "timestamp": "1780000321",
        "recipient_id": DE,
    }
)


# --- Cloud: one inbound message per body -------------------------------------------------


def _cm(
    n: int, type_: str, payload: Any = None, *, sender: str = DE, ts: int = 0, **extra: Any
) -> dict[str, Any]:
    """A Cloud inbound message in Meta's key order."""
    message: dict[str, Any] = {**extra, "from": sender, "id": _wamid(sender, n)}
    message["timestamp"] = str(1780000000 + ts + n)
    if payload is not None:
        message[type_] = payload
    message["type"] = type_
    return message


_CLOUD_MESSAGES: list[Case] = [
    _cloud_case("cloud-text", CLOUD_TEXT, _m("text", _wamid(DE, 1), DE, P)),
    _cloud_case(
        "cloud-text-escaped-unicode-es",
        _cloud_messages(
            _cm(2, "text", {"body": "¿Tienen envío a Canarias? 🚚🌴 ¡Gracias! — Lucía"}, sender=ES),
            contact=_contact(ES, "Lucía García"),
        ),
        _m("text", _wamid(ES, 2), ES, P),
    ),
    _cloud_case(
        "cloud-text-65536-chars",
        _cloud_messages(_cm(3, "text", {"body": "Grüße aus München! " * 3449 + "ä" * 5})),
        _m("text", _wamid(DE, 3), DE, P),
    ),
    _cloud_case(
        "cloud-image",
        _cloud_messages(
            _cm(
                4,
                "image",
                {
                    "caption": "Foto vom Wasserschaden in der Küche",
                    "mime_type": "image/jpeg",
                    "sha256": _sha_hex(4),
                    "id": _cloud_media(4),
                    "url": "https://lookaside.fbsbx.com/whatsapp_business/attachments/"
                    f"?mid={_cloud_media(4)}&ext=1780003600&hash=ATuQm3x-9Zb2",
                },
            )
        ),
        _m("image", _wamid(DE, 4), DE, P),
    ),
    _cloud_case(
        "cloud-video",
        _cloud_messages(
            _cm(
                5,
                "video",
                {
                    "caption": "So sieht es jetzt aus 😬",
                    "mime_type": "video/mp4",
                    "sha256": _sha_hex(5),
                    "id": _cloud_media(5),
                },
            )
        ),
        _m("video", _wamid(DE, 5), DE, P),
    ),
    _cloud_case(
        "cloud-document",
        _cloud_messages(
            _cm(
                6,
                "document",
                {
                    "caption": "Rechnung März",
                    "filename": "Rechnung_2026-03_Nr-4711.pdf",
                    "mime_type": "application/pdf",
                    "sha256": _sha_hex(6),
                    "id": _cloud_media(6),
                },
            )
        ),
        _m("document", _wamid(DE, 6), DE, P),
    ),
    _cloud_case(
        "cloud-audio",
        _cloud_messages(
            _cm(
                7,
                "audio",
                {
                    "mime_type": "audio/mpeg",
                    "sha256": _sha_hex(7),
                    "id": _cloud_media(7),
                    "voice": False,
                },
            )
        ),
        _m("audio", _wamid(DE, 7), DE, P),
    ),
    _cloud_case(
        "cloud-voice-note-as-audio",
        _cloud_messages(
            _cm(
                8,
                "audio",
                {
                    "mime_type": "audio/ogg; codecs=opus",
                    "sha256": _sha_hex(8),
                    "id": _cloud_media(8),
                    "voice": True,
                },
            )
        ),
        _m("audio", _wamid(DE, 8), DE, P),
    ),
    _cloud_case(
        "cloud-sticker-animated",
        _cloud_messages(
            _cm(
                9,
                "sticker",
                {
                    "mime_type": "image/webp",
                    "sha256": _sha_hex(9),
                    "id": _cloud_media(9),
                    "animated": True,
                },
            )
        ),
        _m("sticker", _wamid(DE, 9), DE, P),
    ),
    _cloud_case(
        "cloud-location",
        _cloud_messages(
            _cm(
                10,
                "location",
                {
                    "address": "Marienplatz 1, 80331 München",
                    "latitude": 48.137154,
                    "longitude": 11.576124,
                    "name": "Neues Rathaus",
                    "url": "https://www.muenchen.de",
                },
            )
        ),
        _m("location", _wamid(DE, 10), DE, P),
    ),
    _cloud_case(
        "cloud-contacts-vcard",
        _cloud_messages(
            _cm(
                11,
                "contacts",
                [
                    {
                        "addresses": [
                            {
                                "city": "Madrid",
                                "country": "España",
                                "country_code": "ES",
                                "street": "Calle de Alcalá 42",
                                "type": "WORK",
                                "zip": "28014",
                            }
                        ],
                        "birthday": "1988-04-12",
                        "emails": [{"email": "lucia.garcia@example.es", "type": "WORK"}],
                        "name": {
                            "first_name": "Lucía",
                            "formatted_name": "Lucía García",
                            "last_name": "García",
                        },
                        "org": {"company": "Panadería García", "title": "Gerente"},
                        "phones": [{"phone": "+34 612 34 56 78", "type": "CELL", "wa_id": ES}],
                        "urls": [{"url": "https://panaderia-garcia.example.es", "type": "WORK"}],
                    },
                    {
                        "name": {"first_name": "Jonas", "formatted_name": "Jonas Weber"},
                        "phones": [{"phone": "+49 157 12340987", "type": "HOME"}],
                    },
                ],
            )
        ),
        _m("contacts", _wamid(DE, 11), DE, P),
    ),
    _cloud_case(
        "cloud-interactive-button-reply",
        _cloud_messages(
            _cm(
                12,
                "interactive",
                {
                    "type": "button_reply",
                    "button_reply": {"id": "slot_1400", "title": "Dienstag 14:00"},
                },
                context={"from": DISPLAY_PHONE, "id": _wamid(DE, 12, outbound=True)},
            )
        ),
        _m("interactive", _wamid(DE, 12), DE, P),
    ),
    _cloud_case(
        "cloud-interactive-list-reply",
        _cloud_messages(
            _cm(
                13,
                "interactive",
                {
                    "type": "list_reply",
                    "list_reply": {
                        "id": "branch_munich",
                        "title": "München",
                        "description": "Filiale Sendlinger Straße",
                    },
                },
                context={"from": DISPLAY_PHONE, "id": _wamid(DE, 13, outbound=True)},
            )
        ),
        _m("interactive", _wamid(DE, 13), DE, P),
    ),
    _cloud_case(
        "cloud-interactive-nfm-reply",
        _cloud_messages(
            _cm(
                14,
                "interactive",
                {
                    "type": "nfm_reply",
                    "nfm_reply": {
                        "response_json": json.dumps(
                            {
                                "flow_token": "termin-7f3a",
                                "datum": "2026-05-12",
                                "uhrzeit": "14:00",
                                "anmerkung": "Bitte Rückruf vorher",
                            },
                            ensure_ascii=False,
                        ),
                        "body": "Sent",
                        "name": "flow",
                    },
                },
                context={"from": DISPLAY_PHONE, "id": _wamid(DE, 14, outbound=True)},
            )
        ),
        _m("interactive", _wamid(DE, 14), DE, P),
    ),
    _cloud_case(
        "cloud-interactive-call-permission-reply",
        _cloud_messages(
            _cm(
                15,
                "interactive",
                {
                    "type": "call_permission_reply",
                    "call_permission_reply": {
                        "response": "accept",
                        "is_permanent": False,
                        "expiration_timestamp": 1780604800,
                        "response_source": "user_action",
                    },
                },
            )
        ),
        _m("interactive", _wamid(DE, 15), DE, P),
    ),
    _cloud_case(
        "cloud-button-template-quick-reply",
        _cloud_messages(
            _cm(
                16,
                "button",
                {"payload": "TERMIN_BESTAETIGEN", "text": "Ja, passt!"},
                context={"from": DISPLAY_PHONE, "id": _wamid(DE, 16, outbound=True)},
            )
        ),
        _m("button", _wamid(DE, 16), DE, P),
    ),
    _cloud_case(
        "cloud-reaction",
        _cloud_messages(
            _cm(17, "reaction", {"message_id": _wamid(DE, 17, outbound=True), "emoji": "👍"})
        ),
        _m("reaction", _wamid(DE, 17), DE, P),
    ),
    _cloud_case(
        "cloud-reaction-removed",
        _cloud_messages(
            _cm(18, "reaction", {"message_id": _wamid(DE, 17, outbound=True), "emoji": ""})
        ),
        _m("reaction", _wamid(DE, 18), DE, P),
    ),
    _cloud_case(
        "cloud-order",
        _cloud_messages(
            _cm(
                19,
                "order",
                {
                    "catalog_id": "862133412345678",
                    "text": "Para recoger mañana por la mañana",
                    "product_items": [
                        {
                            "product_retailer_id": "pan-integral-750",
                            "quantity": 2,
                            "item_price": 3.5,
                            "currency": "EUR",
                        },
                        {
                            "product_retailer_id": "ensaimada",
                            "quantity": 6,
                            "item_price": 1.8,
                            "currency": "EUR",
                        },
                    ],
                },
                sender=ES,
            ),
            contact=_contact(ES, "Lucía García"),
        ),
        _m("order", _wamid(ES, 19), ES, P),
    ),
    _cloud_case(
        "cloud-system-user-changed-number",
        _cloud_messages(
            _cm(
                20,
                "system",
                {
                    "body": f"Clara Fuchs changed their phone number from {DE} to {DE_NEW}",
                    "wa_id": DE_NEW,
                    "type": "user_changed_number",
                },
            )
        ),
        _m("system", _wamid(DE, 20), DE, P),
    ),
    _cloud_case(
        "cloud-system-customer-changed-number",
        _cloud_messages(
            _cm(
                21,
                "system",
                {
                    "body": f"Clara Fuchs changed from {DE} to {DE_NEW}",
                    "new_wa_id": DE_NEW,
                    "type": "customer_changed_number",
                },
            )
        ),
        _m("system", _wamid(DE, 21), DE, P),
    ),
    _cloud_case(
        "cloud-system-customer-identity-changed",
        _cloud_messages(
            _cm(
                22,
                "system",
                {
                    "body": "Der Sicherheitscode von Clara Fuchs hat sich geändert.",
                    "identity": "k3qPm1wT0hA=",
                    "customer": DE,
                    "type": "customer_identity_changed",
                },
            )
        ),
        _m("system", _wamid(DE, 22), DE, P),
    ),
    _cloud_case(
        "cloud-system-user-changed-user-id",
        _cloud_messages(
            _cm(
                23,
                "system",
                {
                    "body": "Mateo changed their user id",
                    "user_id": "ES.556677889900112",
                    "type": "user_changed_user_id",
                },
                sender=MX,
                from_user_id=BSUID,
            ),
            contact={
                "profile": {"name": "Mateo", "username": "@mateo.bakes"},
                "wa_id": MX,
                "user_id": BSUID,
            },
        ),
        _m("system", _wamid(MX, 23), MX, P, user_id=BSUID),
    ),
    _cloud_case(
        "cloud-unsupported",
        _cloud_messages(
            _cm(
                24,
                "unsupported",
                {"type": "poll"},
                errors=[
                    {
                        "code": 131051,
                        "title": "Message type unknown",
                        "message": "Message type unknown",
                        "error_data": {"details": "Message type is currently not supported."},
                    }
                ],
            )
        ),
        _m("unsupported", _wamid(DE, 24), DE, P),
    ),
    _cloud_case(
        "cloud-request-welcome",
        _cloud_messages(_cm(25, "request_welcome")),
        _m("request_welcome", _wamid(DE, 25), DE, P),
    ),
    _cloud_case(
        "cloud-edit",
        _cloud_messages(
            _cm(
                26,
                "edit",
                {
                    "original_message_id": _wamid(DE, 3),
                    "message": {
                        "type": "text",
                        "text": {"body": "Korrektur: 14 Uhr, nicht 15 Uhr 🙈"},
                    },
                },
            )
        ),
        _m("edit", _wamid(DE, 26), DE, P),
    ),
    _cloud_case(
        "cloud-revoke",
        _cloud_messages(_cm(27, "revoke", {"original_message_id": _wamid(DE, 26)})),
        _m("revoke", _wamid(DE, 27), DE, P),
    ),
    _cloud_case(
        "cloud-group-message",
        _cloud_messages(
            _cm(28, "text", {"body": "Wer bringt den Kuchen mit? 🎂"}, group_id=GROUP_ID)
        ),
        _m("text", _wamid(DE, 28), DE, P, group_id=GROUP_ID),
    ),
    _cloud_case(
        "cloud-username-user-without-from",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change(
                        "messages",
                        _value(
                            contacts=[
                                {
                                    "profile": {"name": "Mateo", "username": "@mateo.bakes"},
                                    "user_id": BSUID,
                                    "parent_user_id": "ES.000111222333444",
                                    "identity_key_hash": "tK9b2w==",
                                }
                            ],
                            messages=[
                                {
                                    "from_user_id": BSUID,
                                    "from_parent_user_id": "ES.000111222333444",
                                    "id": "wamid.HBgSRVMuMTE5MjgzNzQ2NTAxOTI4FQIAEhgUM0VCMEE5",
                                    "timestamp": "1780000029",
                                    "text": {"body": "¡Hola! ¿Hacéis envíos a Valencia?"},
                                    "type": "text",
                                }
                            ],
                        ),
                    )
                )
            )
        ),
        _m("text", "wamid.HBgSRVMuMTE5MjgzNzQ2NTAxOTI4FQIAEhgUM0VCMEE5", None, P, user_id=BSUID),
    ),
    _cloud_case(
        "cloud-referral-ctwa",
        _cloud_messages(
            _cm(
                30,
                "text",
                {"body": "Quiero más información sobre la oferta"},
                sender=ES,
                referral={
                    "source_url": "https://fb.me/2ZxPqRs7t",
                    "source_id": "120212345678901234",
                    "source_type": "ad",
                    "body": "Pan recién hecho cada mañana 🥖",
                    "headline": "Panadería García",
                    "media_type": "image",
                    "image_url": "https://scontent.xx.fbcdn.net/v/t45.1600-4/123_n.jpg",
                    "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7Jw",
                    "welcome_message": {"text": "¡Hola! ¿En qué podemos ayudarte?"},
                },
            ),
            contact=_contact(ES, "Lucía García"),
        ),
        _m("text", _wamid(ES, 30), ES, P),
    ),
    _cloud_case(
        "cloud-context-reply",
        _cloud_messages(
            _cm(
                31,
                "text",
                {"body": "Ja, genau diese Adresse."},
                context={"from": DISPLAY_PHONE, "id": _wamid(DE, 31, outbound=True)},
            )
        ),
        _m("text", _wamid(DE, 31), DE, P),
    ),
    _cloud_case(
        "cloud-context-forwarded",
        _cloud_messages(
            _cm(
                32,
                "image",
                {"mime_type": "image/jpeg", "sha256": _sha_hex(32), "id": _cloud_media(32)},
                context={"forwarded": True, "frequently_forwarded": True},
            )
        ),
        _m("image", _wamid(DE, 32), DE, P),
    ),
    _cloud_case(
        "cloud-context-referred-product",
        _cloud_messages(
            _cm(
                33,
                "text",
                {"body": "Ist die noch lieferbar?"},
                context={
                    "from": DISPLAY_PHONE,
                    "id": _wamid(DE, 33, outbound=True),
                    "referred_product": {
                        "catalog_id": "862133412345678",
                        "product_retailer_id": "brezel-xxl",
                    },
                },
            )
        ),
        _m("text", _wamid(DE, 33), DE, P),
    ),
    _cloud_case(
        "cloud-future-type-hologram",
        _cloud_messages(
            _cm(
                34,
                "hologram",
                {
                    "id": _cloud_media(34),
                    "mime_type": "model/gltf-binary",
                    "frames": 120,
                    "caption": "Unser neues Logo in 3D ✨",
                },
            )
        ),
        _m("hologram", _wamid(DE, 34), DE, P),
    ),
]


# --- Cloud: statuses ----------------------------------------------------------------------

_CLOUD_STATUSES: list[Case] = [
    _cloud_case("cloud-status-read", CLOUD_STATUS, _s("read", _wamid(DE, 1, outbound=True), DE, P)),
    _cloud_case(
        "cloud-status-sent-cbp",
        _cloud_statuses(
            {
                "id": _wamid(DE, 40, outbound=True),
                "status": "sent",
                "timestamp": "1780000140",
                "recipient_id": DE,
                "conversation": {
                    "id": "f6e5d4c3b2a1908f7e6d5c4b3a291807",
                    "expiration_timestamp": "1780086540",
                    "origin": {"type": "utility"},
                },
                "pricing": {"billable": True, "pricing_model": "CBP", "category": "utility"},
            }
        ),
        _s("sent", _wamid(DE, 40, outbound=True), DE, P),
    ),
    _cloud_case(
        "cloud-status-delivered-pmp",
        _cloud_statuses(
            {
                "id": _wamid(ES, 41, outbound=True),
                "status": "delivered",
                "timestamp": "1780000141",
                "recipient_id": ES,
                "biz_opaque_callback_data": "pedido/4711",
                "conversation": {
                    "id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
                    "origin": {"type": "marketing"},
                },
                "pricing": {
                    "billable": True,
                    "pricing_model": "PMP",
                    "category": "marketing",
                    "type": "regular",
                },
            }
        ),
        _s("delivered", _wamid(ES, 41, outbound=True), ES, P),
    ),
    _cloud_case(
        "cloud-status-read-free-service",
        _cloud_statuses(
            {
                "id": _wamid(DE, 42, outbound=True),
                "status": "read",
                "timestamp": "1780000142",
                "recipient_id": DE,
                "pricing": {
                    "billable": False,
                    "pricing_model": "PMP",
                    "category": "service",
                    "type": "free_customer_service",
                },
            }
        ),
        _s("read", _wamid(DE, 42, outbound=True), DE, P),
    ),
    _cloud_case(
        "cloud-status-played",
        _cloud_statuses(
            {
                "id": _wamid(DE, 43, outbound=True),
                "status": "played",
                "timestamp": "1780000143",
                "recipient_id": DE,
            }
        ),
        _s("played", _wamid(DE, 43, outbound=True), DE, P),
    ),
    _cloud_case(
        "cloud-status-failed",
        _cloud_statuses(
            {
                "id": _wamid(DE, 44, outbound=True),
                "status": "failed",
                "timestamp": "1780000144",
                "recipient_id": DE,
                "errors": [
                    {
                        "code": 131047,
                        "title": "Re-engagement message",
                        "message": "Re-engagement message",
                        "error_data": {
                            "details": "Message failed to send because more than 24 hours "
                            "have passed since the customer last replied to this number."
                        },
                        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/"
                        "support/error-codes/",
                    }
                ],
            }
        ),
        _s("failed", _wamid(DE, 44, outbound=True), DE, P),
    ),
    _cloud_case(
        "cloud-status-to-bsuid",
        _cloud_statuses(
            {
                "id": "wamid.HBgSREUuODgxMjAzMzc0NjUwMjEzFQIAERgSNUExN0QwQzBGRkVFOTk4ODc3AA==",
                "status": "delivered",
                "timestamp": "1780000145",
                "recipient_user_id": BSUID_DE,
                "recipient_type": "individual",
            }
        ),
        _s(
            "delivered",
            "wamid.HBgSREUuODgxMjAzMzc0NjUwMjEzFQIAERgSNUExN0QwQzBGRkVFOTk4ODc3AA==",
            None,
            P,
            user_id=BSUID_DE,
        ),
    ),
    _cloud_case(
        "cloud-status-group",
        _cloud_statuses(
            {
                "id": _wamid(DE, 46, outbound=True),
                "status": "read",
                "timestamp": "1780000146",
                "recipient_id": GROUP_ID,
                "recipient_type": "group",
                "recipient_participant_id": DE2,
            }
        ),
        _s("read", _wamid(DE, 46, outbound=True), GROUP_ID, P, group_id=GROUP_ID),
    ),
]


# --- Cloud: errors -------------------------------------------------------------------------

_CLOUD_ERRORS: list[Case] = [
    _cloud_case(
        "cloud-error-130429",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change(
                        "messages",
                        _value(
                            errors=[
                                {
                                    "code": 130429,
                                    "title": "Rate limit hit",
                                    "message": "(#130429) Rate limit hit",
                                    "error_data": {
                                        "details": "Throughput level of the number was exceeded."
                                    },
                                }
                            ]
                        ),
                    )
                )
            )
        ),
        _e("130429", P),
    ),
    _cloud_case(
        "cloud-errors-two-code-string-and-missing",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change(
                        "messages",
                        _value(
                            errors=[
                                {
                                    "code": "131000",
                                    "title": "Something went wrong",
                                    "message": "Something went wrong",
                                    "error_data": {"details": "Unbekannter Fehler — bitte erneut"},
                                },
                                {"title": "No code at all", "message": "Fehler ohne Code"},
                            ]
                        ),
                    )
                )
            )
        ),
        _e("131000", P),
        _e(None, P),
    ),
]


# --- Cloud: fields other than "messages" -----------------------------------------------------

WACID = "wacid.HBgNNDkxNTE5ODc2NTQzMhUCABEYIEE1QzM3OTlFMzhGNjQ5QjA"
WACID_2 = "wacid.HBgNNDkxNTE5ODc2NTQzMhUCABEYIDc3QjJGMDE5QUQ0RjQ2MzI"

_OTHER_FIELDS: list[tuple[str, Any]] = [
    (
        "message_template_status_update",
        {
            "event": "APPROVED",
            "message_template_id": 1234567890123456,
            "message_template_name": "termin_erinnerung",
            "message_template_language": "de",
            "reason": "NONE",
            "message_template_category": "UTILITY",
        },
    ),
    (
        "message_template_quality_update",
        {
            "previous_quality_score": "GREEN",
            "new_quality_score": "YELLOW",
            "message_template_id": 1234567890123457,
            "message_template_name": "oferta_semanal",
            "message_template_language": "es",
        },
    ),
    (
        "message_template_components_update",
        {
            "message_template_id": 1234567890123458,
            "message_template_name": "bestellung_versandt",
            "message_template_language": "de",
            "message_template_element": "Ihre Bestellung {{1}} ist unterwegs 📦",
            "message_template_footer": "Bäckerei Müller",
        },
    ),
    (
        "template_category_update",
        {
            "message_template_id": 1234567890123459,
            "message_template_name": "newsletter_mai",
            "message_template_language": "de",
            "previous_category": "UTILITY",
            "new_category": "MARKETING",
        },
    ),
    (
        "phone_number_quality_update",
        {"display_phone_number": DISPLAY_PHONE, "event": "UPGRADE", "current_limit": "TIER_10K"},
    ),
    (
        "phone_number_name_update",
        {
            "display_phone_number": DISPLAY_PHONE,
            "decision": "APPROVED",
            "requested_verified_name": "Bäckerei Müller",
            "rejection_reason": None,
        },
    ),
    ("account_update", {"phone_number": DISPLAY_PHONE, "event": "VERIFIED_ACCOUNT"}),
    ("account_review_update", {"decision": "APPROVED"}),
    (
        "account_alerts",
        {
            "entity_type": "WABA",
            "entity_id": WABA_ID,
            "alert_severity": "WARNING",
            "alert_status": "ACTIVE",
            "alert_type": "INCREASED_CAPABILITIES_ELIGIBILITY",
            "alert_description": "Your business is eligible for higher messaging limits.",
        },
    ),
    (
        "business_capability_update",
        {"max_daily_conversation_per_phone": 100000, "max_phone_numbers_per_business": 25},
    ),
    ("security", {"display_phone_number": DISPLAY_PHONE, "event": "PIN_CHANGED"}),
    (
        # Its value holds an `errors` array: still one `other` event, no error events.
        "flows",
        {
            "event": "ENDPOINT_ERROR_RATE",
            "message": "Flow Terminbuchung's endpoint error rate has reached 10%",
            "flow_id": "1029384756473829",
            "threshold": 10,
            "alert_state": "ACTIVATED",
            "errors": [
                {"error_type": "TIMEOUT_ERROR", "error_rate": 20, "error_count": 4},
                {"error_type": "INVALID_RESPONSE", "error_rate": 5, "error_count": 1},
            ],
        },
    ),
    (
        "user_preferences",
        _value(
            contacts=[_contact(DE, "Clara Fuchs")],
            user_preferences=[
                {
                    "wa_id": DE,
                    "detail": "User requested to stop marketing messages",
                    "category": "marketing_messages",
                    "value": "stop",
                    "timestamp": 1780000500,
                }
            ],
        ),
    ),
    (
        # Its calls and the statuses of calls are events of their own, kind `call`.
        "calls",
        _value(
            contacts=[_contact(DE, "Clara Fuchs")],
            calls=[
                {
                    "id": WACID,
                    "to": DISPLAY_PHONE,
                    "from": DE,
                    "event": "connect",
                    "timestamp": "1780000600",
                    "direction": "USER_INITIATED",
                    "session": {"sdp_type": "offer", "sdp": "v=0\r\no=- 4611731400430051336 2 IN"},
                }
            ],
            statuses=[
                {
                    "id": WACID,
                    "timestamp": "1780000601",
                    "type": "call",
                    "status": "RINGING",
                    "recipient_id": DE,
                }
            ],
        ),
    ),
    (
        # History sync carries whole past `messages`: still one `other` event.
        "history",
        _value(
            history=[
                {
                    "metadata": {"phase": 0, "chunk_order": 1, "progress": 55},
                    "threads": [
                        {
                            "id": DE,
                            "messages": [
                                {
                                    "from": DE,
                                    "id": _wamid(DE, 90),
                                    "timestamp": "1770000000",
                                    "type": "text",
                                    "text": {"body": "Frohes neues Jahr! 🎆"},
                                    "history_context": {"status": "READ"},
                                }
                            ],
                        }
                    ],
                }
            ]
        ),
    ),
    (
        # What the business sent from the WhatsApp Business app: events of their own, `echo`.
        "smb_message_echoes",
        _value(
            message_echoes=[
                {
                    "from": DISPLAY_PHONE,
                    "to": DE,
                    "id": _wamid(DE, 91, outbound=True),
                    "timestamp": "1780000700",
                    "type": "text",
                    "text": {"body": "Gern geschehen, bis Samstag!"},
                }
            ]
        ),
    ),
    (
        "smb_app_state_sync",
        _value(
            state_sync=[
                {
                    "type": "contact",
                    "contact": {
                        "full_name": "Clara Fuchs",
                        "first_name": "Clara",
                        "phone_number": DE,
                    },
                    "action": "add",
                    "metadata": {"timestamp": "1780000800"},
                }
            ]
        ),
    ),
    (
        # A field invented after this code was written, with chat-looking arrays inside.
        "quantum_update",
        {
            "entanglement": {"qubits": 12, "fidelity": 0.9971},
            "messages": [{"id": "q-1", "type": "superposition"}],
            "statuses": [{"id": "q-1", "status": "collapsed"}],
            "errors": [{"code": 42}],
        },
    ),
]

# What each field above gives where it is not one `other` event without a phone_number_id:
# fields whose value names the business number by its metadata, and the fields whose elements
# are events of their own.
_FIELD_EVENTS: dict[str, tuple[Expected, ...]] = {
    "user_preferences": (_o("user_preferences", P),),
    "calls": (_call("connect", WACID, DE, P), _call("RINGING", WACID, DE, P)),
    "history": (_o("history", P),),
    "smb_message_echoes": (_echo("text", _wamid(DE, 91, outbound=True), DE, P),),
    "smb_app_state_sync": (_o("smb_app_state_sync", P),),
}


def _field_events(field: str) -> tuple[Expected, ...]:
    return _FIELD_EVENTS.get(field, (_o(field),))


def _on_second_number(value: Any) -> Any:
    """The value as the second business number's. The calls and echoes above keep their ids,
    and ids are scoped by number, not by body: on the first number they would be the same
    events again (redeliveries), not events of this case."""
    if isinstance(value, dict) and "metadata" in value:
        number = {"display_phone_number": DISPLAY_PHONE_ES, "phone_number_id": PHONE_NUMBER_ID_ES}
        return {**value, "metadata": number}
    return value


def _second_number_events(field: str) -> tuple[Expected, ...]:
    events = _field_events(field)
    return tuple(replace(e, phone_number_id=P_ES) if e.phone_number_id else e for e in events)


_CLOUD_OTHER: list[Case] = [
    _cloud_case(
        f"cloud-other-{field}",
        _cloud_other(field, value, time=1780000400 + i),
        *_field_events(field),
    )
    for i, (field, value) in enumerate(_OTHER_FIELDS)
] + [
    _cloud_case(
        "cloud-other-without-entry-time",
        _cloud_other("account_update", {"event": "ACCOUNT_DELETED"}, time=None),
        _o("account_update"),
    ),
    _cloud_case(
        "cloud-other-all-fields-one-entry",
        _cloud_bytes(
            _cloud(
                _entry(
                    *(_change(field, _on_second_number(value)) for field, value in _OTHER_FIELDS),
                    time=1780000999,
                )
            )
        ),
        *(event for field, _ in _OTHER_FIELDS for event in _second_number_events(field)),
    ),
]


# --- Cloud: batches, ordering, empties, leaf types, extra fields ----------------------------


def _cs(n: int, status: str, recipient: str = DE, *, ts: int = 0) -> dict[str, Any]:
    return {
        "id": _wamid(recipient, n, outbound=True),
        "status": status,
        "timestamp": str(1780001000 + ts + n),
        "recipient_id": recipient,
    }


_BATCH_STATUSES = [_cs(1000 + i, ("sent", "delivered", "read")[i % 3]) for i in range(300)]

_CLOUD_BATCHES: list[Case] = [
    _cloud_case(
        "cloud-several-messages-and-statuses-one-value",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change(
                        "messages",
                        _value(
                            contacts=[
                                _contact(DE, "Clara Fuchs"),
                                _contact(DE2, "Jonas Weber"),
                            ],
                            messages=[
                                _cm(50, "text", {"body": "Erste Nachricht"}),
                                _cm(51, "text", {"body": "Zweite Nachricht"}, sender=DE2),
                                _cm(52, "reaction", {"message_id": _wamid(DE, 50), "emoji": "❤️"}),
                            ],
                            statuses=[_cs(53, "delivered"), _cs(54, "read", DE2)],
                        ),
                    )
                )
            )
        ),
        _m("text", _wamid(DE, 50), DE, P),
        _m("text", _wamid(DE2, 51), DE2, P),
        _m("reaction", _wamid(DE, 52), DE, P),
        _s("delivered", _wamid(DE, 53, outbound=True), DE, P),
        _s("read", _wamid(DE2, 54, outbound=True), DE2, P),
    ),
    _cloud_case(
        "cloud-statuses-key-before-messages-key",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change(
                        "messages",
                        {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": DISPLAY_PHONE,
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            "statuses": [_cs(60, "sent"), _cs(61, "sent")],
                            "contacts": [_contact(DE, "Clara Fuchs")],
                            "messages": [_cm(62, "text", {"body": "Danke!"})],
                            "errors": [{"code": 131000, "title": "Something went wrong"}],
                        },
                    )
                )
            )
        ),
        _s("sent", _wamid(DE, 60, outbound=True), DE, P),
        _s("sent", _wamid(DE, 61, outbound=True), DE, P),
        _m("text", _wamid(DE, 62), DE, P),
        _e("131000", P),
    ),
    _cloud_case(
        "cloud-several-entries-and-changes",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change("messages", _value(statuses=[_cs(70, "delivered")])),
                    _change(
                        "messages",
                        _value(
                            contacts=[_contact(DE, "Clara Fuchs")],
                            messages=[_cm(71, "text", {"body": "Noch eine Frage …"})],
                        ),
                    ),
                ),
                _entry(
                    _change(
                        "messages",
                        _value(
                            phone_number_id=PHONE_NUMBER_ID_ES,
                            display_phone_number=DISPLAY_PHONE_ES,
                            contacts=[_contact(ES, "Lucía García")],
                            messages=[_cm(72, "text", {"body": "¿Abren el domingo?"}, sender=ES)],
                            statuses=[_cs(73, "read", ES)],
                        ),
                    ),
                    waba_id=WABA_ID_ES,
                ),
            )
        ),
        _s("delivered", _wamid(DE, 70, outbound=True), DE, P),
        _m("text", _wamid(DE, 71), DE, P),
        _m("text", _wamid(ES, 72), ES, P_ES),
        _s("read", _wamid(ES, 73, outbound=True), ES, P_ES),
    ),
    _cloud_case(
        "cloud-mixed-fields-across-entries",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change("account_update", {"phone_number": DISPLAY_PHONE, "event": "FLAGGED"}),
                    _change("messages", _value(statuses=[_cs(80, "failed")])),
                    time=1780002000,
                ),
                _entry(
                    _change(
                        "messages",
                        _value(
                            phone_number_id=PHONE_NUMBER_ID_ES,
                            display_phone_number=DISPLAY_PHONE_ES,
                            errors=[{"code": 130429, "title": "Rate limit hit"}],
                        ),
                    ),
                    _change("security", {"display_phone_number": DISPLAY_PHONE_ES, "event": "X"}),
                    waba_id=WABA_ID_ES,
                    time=1780002001,
                ),
            )
        ),
        _o("account_update"),
        _s("failed", _wamid(DE, 80, outbound=True), DE, P),
        _e("130429", P_ES),
        _o("security"),
    ),
    _cloud_case(
        "cloud-field-key-before-value-key",
        _cloud_bytes(
            _cloud(
                _entry(
                    {
                        "field": "messages",
                        "value": _value(
                            contacts=[_contact(DE, "Clara Fuchs")],
                            messages=[_cm(81, "text", {"body": "field zuerst"})],
                        ),
                    }
                )
            )
        ),
        _m("text", _wamid(DE, 81), DE, P),
    ),
    _cloud_case(
        "cloud-300-statuses",
        _cloud_statuses(*_BATCH_STATUSES),
        *(_s(st["status"], st["id"], DE, P) for st in _BATCH_STATUSES),
    ),
    _cloud_case(
        "cloud-contacts-only-no-events",
        _cloud_bytes(_cloud(_entry(_change("messages", _value(contacts=[_contact(DE, "C")]))))),
    ),
    _cloud_case(
        "cloud-empty-arrays-no-events",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change("messages", _value(contacts=[], messages=[], statuses=[], errors=[]))
                )
            )
        ),
    ),
    _cloud_case("cloud-empty-entry-list", _cloud_bytes(_cloud())),
    _cloud_case("cloud-entry-with-empty-changes", _cloud_bytes(_cloud(_entry()))),
    _cloud_case(
        "cloud-leaf-values-of-unexpected-types",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change(
                        "messages",
                        _value(
                            contacts=[{"profile": {"name": 7}, "wa_id": int(DE)}],
                            messages=[
                                {
                                    "from": int(DE),
                                    "id": 12345,
                                    "timestamp": 1780000082,
                                    "type": "text",
                                    "text": {"body": ["not", "a", "string"]},
                                },
                                {
                                    "from": DE,
                                    "id": _wamid(DE, 83),
                                    "timestamp": "gestern",
                                    "type": "text",
                                    "text": None,
                                },
                            ],
                            statuses=[
                                {
                                    "id": 67890,
                                    "status": "delivered",
                                    "timestamp": 1780000084,
                                    "recipient_id": DE,
                                    "conversation": "not-an-object",
                                    "pricing": [1, 2, 3],
                                }
                            ],
                        ),
                    )
                )
            )
        ),
        _m("text", "12345", DE, P),
        _m("text", _wamid(DE, 83), DE, P),
        _s("delivered", "67890", DE, P),
    ),
    _cloud_case(
        "cloud-unknown-extra-fields-everywhere",
        _cloud_bytes(
            {
                "x_relay": {"hop": 1, "via": ["360dialog", "edge-fra"]},
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": WABA_ID,
                        "x_shard": 17,
                        "changes": [
                            {
                                "value": {
                                    "messaging_product": "whatsapp",
                                    "metadata": {
                                        "display_phone_number": DISPLAY_PHONE,
                                        "phone_number_id": PHONE_NUMBER_ID,
                                        "x_region": "eu-central",
                                    },
                                    "x_tags": [1, "zwei", None, [3], {"vier": 4}],
                                    "contacts": [
                                        {
                                            "profile": {"name": "Clara", "x_avatar": None},
                                            "wa_id": DE,
                                            "x_score": 0.5,
                                        }
                                    ],
                                    "messages": [
                                        {
                                            "x_priority": "hoch",
                                            "from": DE,
                                            "id": _wamid(DE, 85),
                                            "timestamp": "1780000085",
                                            "x_nested": {"a": [{"b": [None, True]}]},
                                            "type": "text",
                                            "text": {"body": "Extra-Felder 🧪", "x_lang": "de"},
                                        }
                                    ],
                                    "statuses": [
                                        {
                                            **_cs(86, "read"),
                                            "x_latency_ms": 123,
                                            "x_list": [],
                                        }
                                    ],
                                },
                                "x_change_seq": 3,
                                "field": "messages",
                            }
                        ],
                    }
                ],
                "x_trailer": "ende",
            }
        ),
        _m("text", _wamid(DE, 85), DE, P),
        _s("read", _wamid(DE, 86, outbound=True), DE, P),
    ),
    _cloud_case(
        "cloud-raw-utf8-instead-of-escapes",
        json.dumps(
            _cloud(
                _entry(
                    _change(
                        "messages",
                        _value(
                            contacts=[_contact(ES, "Lucía García")],
                            messages=[
                                _cm(87, "text", {"body": "Año nuevo, pan nuevo 🥐"}, sender=ES)
                            ],
                        ),
                    )
                )
            ),
            ensure_ascii=False,
            indent=2,
        ).encode(),
        _m("text", _wamid(ES, 87), ES, P),
    ),
]


# --- Cloud: user ids, groups, calls and message echoes (docs/protocol.md §6) ----------------

WACID_3 = "wacid.HBgNNDkxNTE5ODc2NTQzMhUCABEYIEJGMTQwQ0U1RTJBNjQ3MDk"
_USERNAME_CONTACT = {
    "profile": {"name": "Mateo", "username": "@mateo.bakes"},
    "user_id": BSUID,
    "parent_user_id": "ES.000111222333444",
}
_DE_CONTACT = {"profile": {"name": "Clara Fuchs"}, "wa_id": DE, "user_id": BSUID_DE}


def _cloud_change(field: str, *, time: int | None = None, **arrays: Any) -> bytes:
    """One Cloud change of `field` whose value has metadata and `arrays`."""
    return _cloud_bytes(_cloud(_entry(_change(field, _value(**arrays)), time=time)))


_CLOUD_IDENTITIES: list[Case] = [
    _cloud_case(
        "cloud-username-user-and-phone-user-in-one-value",
        _cloud_change(
            "messages",
            contacts=[_USERNAME_CONTACT, _DE_CONTACT],
            messages=[
                {
                    "from_user_id": BSUID,
                    "from_parent_user_id": "ES.000111222333444",
                    "id": "wamid.HBgSRVMuMTE5MjgzNzQ2NTAxOTI4FQIAEhgUM0VCMEI3",
                    "timestamp": "1780003001",
                    "text": {"body": "¿Y los sábados?"},
                    "type": "text",
                },
                _cm(301, "text", {"body": "Samstags bis 14 Uhr"}, from_user_id=BSUID_DE),
            ],
        ),
        _m("text", "wamid.HBgSRVMuMTE5MjgzNzQ2NTAxOTI4FQIAEhgUM0VCMEI3", None, P, user_id=BSUID),
        _m("text", _wamid(DE, 301), DE, P, user_id=BSUID_DE),
    ),
    _cloud_case(
        "cloud-group-message-from-username-user",
        _cloud_change(
            "messages",
            contacts=[_USERNAME_CONTACT],
            messages=[
                {
                    "from_user_id": BSUID,
                    "group_id": GROUP_ID,
                    "id": "wamid.HBgSRVMuMTE5MjgzNzQ2NTAxOTI4FQIAEhgUM0VCMEMx",
                    "timestamp": "1780003002",
                    "text": {"body": "Yo llevo el pastel 🎂"},
                    "type": "text",
                }
            ],
        ),
        _m(
            "text",
            "wamid.HBgSRVMuMTE5MjgzNzQ2NTAxOTI4FQIAEhgUM0VCMEMx",
            None,
            P,
            user_id=BSUID,
            group_id=GROUP_ID,
        ),
    ),
    _cloud_case(
        "cloud-status-recipient-id-and-user-id",
        _cloud_statuses({**_cs(302, "delivered"), "recipient_user_id": BSUID_DE}),
        _s("delivered", _wamid(DE, 302, outbound=True), DE, P, user_id=BSUID_DE),
    ),
    _cloud_case(
        "cloud-calls-user-initiated-connect-and-terminate",
        _cloud_change(
            "calls",
            contacts=[_DE_CONTACT],
            calls=[
                {
                    "id": WACID_2,
                    "to": DISPLAY_PHONE,
                    "from": DE,
                    "from_user_id": BSUID_DE,
                    "event": "connect",
                    "timestamp": "1780003010",
                    "direction": "USER_INITIATED",
                    "session": {"sdp_type": "offer", "sdp": "v=0\r\no=- 7 2 IN IP4 127.0.0.1"},
                },
                {
                    "id": WACID_2,
                    "to": DISPLAY_PHONE,
                    "from": DE,
                    "from_user_id": BSUID_DE,
                    "event": "terminate",
                    "direction": "USER_INITIATED",
                    "timestamp": "1780003130",
                    "status": "COMPLETED",
                    "start_time": "1780003012",
                    "end_time": "1780003130",
                    "duration": 118,
                },
            ],
        ),
        _call("connect", WACID_2, DE, P, user_id=BSUID_DE),
        _call("terminate", WACID_2, DE, P, user_id=BSUID_DE),
    ),
    _cloud_case(
        "cloud-calls-business-initiated-to-username-user",
        _cloud_change(
            "calls",
            contacts=[_USERNAME_CONTACT],
            statuses=[
                {
                    "id": WACID_3,
                    "timestamp": "1780003201",
                    "type": "call",
                    "status": "RINGING",
                    "recipient_user_id": BSUID,
                    "biz_opaque_callback_data": "ticket-4711",
                },
                {
                    "id": WACID_3,
                    "timestamp": "1780003203",
                    "type": "call",
                    "status": "REJECTED",
                    "recipient_user_id": BSUID,
                },
            ],
            calls=[
                {
                    "id": WACID_3,
                    "from": DISPLAY_PHONE,
                    "to_user_id": BSUID,
                    "event": "terminate",
                    "direction": "BUSINESS_INITIATED",
                    "timestamp": "1780003204",
                    "status": "FAILED",
                }
            ],
            errors=[
                {
                    "code": 138006,
                    "title": "Lack of call permission",
                    "message": "Lack of call permission",
                    "error_data": {"details": "The user has not granted call permission."},
                }
            ],
        ),
        _call("RINGING", WACID_3, None, P, user_id=BSUID),
        _call("REJECTED", WACID_3, None, P, user_id=BSUID),
        _call("terminate", WACID_3, None, P, user_id=BSUID),
        _e("138006", P),
    ),
    _cloud_case(
        # None of the arrays a calls change is walked for: one `other` event, as for any field.
        "cloud-calls-change-of-an-unknown-shape",
        _cloud_change(
            "calls",
            time=1780003300,
            contacts=[_DE_CONTACT],
            call_permissions=[{"wa_id": DE, "status": "granted", "expiration": 1780608100}],
        ),
        _o("calls", P),
    ),
    _cloud_case(
        "cloud-message-echoes-batch",
        _cloud_change(
            "smb_message_echoes",
            contacts=[_DE_CONTACT, _USERNAME_CONTACT],
            message_echoes=[
                {
                    "from": DISPLAY_PHONE,
                    "to": DE,
                    "to_user_id": BSUID_DE,
                    "id": _wamid(DE, 303, outbound=True),
                    "timestamp": "1780003401",
                    "type": "text",
                    "text": {"body": "Ihre Torte ist abholbereit 🎂"},
                },
                {
                    "from": DISPLAY_PHONE,
                    "to_user_id": BSUID,
                    "id": "wamid.HBgSRVMuMTE5MjgzNzQ2NTAxOTI4FQIAERgSNUExN0VDSE8wMDEA",
                    "timestamp": "1780003402",
                    "type": "image",
                    "image": {
                        "mime_type": "image/jpeg",
                        "sha256": _sha_hex(303),
                        "id": _cloud_media(303),
                        "caption": "La tarta 🎂",
                    },
                },
            ],
        ),
        _echo("text", _wamid(DE, 303, outbound=True), DE, P, user_id=BSUID_DE),
        _echo(
            "image",
            "wamid.HBgSRVMuMTE5MjgzNzQ2NTAxOTI4FQIAERgSNUExN0VDSE8wMDEA",
            None,
            P,
            user_id=BSUID,
        ),
    ),
    _cloud_case(
        # The business's own message, then its status: one id, two kinds, two events.
        "cloud-echo-and-its-status-share-an-id",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change(
                        "smb_message_echoes",
                        _value(
                            message_echoes=[
                                {
                                    "from": DISPLAY_PHONE,
                                    "to": DE,
                                    "id": _wamid(DE, 304, outbound=True),
                                    "timestamp": "1780003501",
                                    "type": "text",
                                    "text": {"body": "Bis gleich!"},
                                }
                            ]
                        ),
                    ),
                    _change("messages", _value(statuses=[_cs(304, "sent")])),
                )
            )
        ),
        _echo("text", _wamid(DE, 304, outbound=True), DE, P),
        _s("sent", _wamid(DE, 304, outbound=True), DE, P),
    ),
    _cloud_case(
        "cloud-user-preferences-of-a-second-number",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change(
                        "user_preferences",
                        _value(
                            phone_number_id=PHONE_NUMBER_ID_ES,
                            display_phone_number=DISPLAY_PHONE_ES,
                            contacts=[_contact(ES, "Lucía García")],
                            user_preferences=[
                                {
                                    "wa_id": ES,
                                    "detail": "User requested to resume marketing messages",
                                    "category": "marketing_messages",
                                    "value": "resume",
                                    "timestamp": 1780003600,
                                }
                            ],
                        ),
                    ),
                    waba_id=WABA_ID_ES,
                    time=1780003601,
                )
            )
        ),
        _o("user_preferences", P_ES),
    ),
    _cloud_case(
        # metadata is not a container of the skeleton: of another type, it names no number.
        "cloud-other-metadata-not-an-object",
        _cloud_other("security", {"metadata": PHONE_NUMBER_ID, "event": "PIN_RESET_REQUEST"}),
        _o("security"),
    ),
]


# --- On-Premise: one inbound message per body ---------------------------------------------


def _om(
    n: int, type_: str, payload: Any = None, *, sender: str = DE, **extra: Any
) -> dict[str, Any]:
    """An On-Premise inbound message; the client sorts keys alphabetically."""
    message: dict[str, Any] = {**extra, "from": sender, "id": _op_in(n)}
    message["timestamp"] = str(1717400000 + n)
    if payload is not None:
        message[type_] = payload
    message["type"] = type_
    return dict(sorted(message.items()))


_OP_MESSAGES: list[Case] = [
    _onprem_case("onprem-text", ONPREM_TEXT, _m("text", _op_in(1), DE)),
    _onprem_case(
        "onprem-text-pretty-printed",
        json.dumps(
            {
                "contacts": [_contact(ES, "Lucía García")],
                "messages": [_om(2, "text", {"body": "¿Cuánto cuesta el envío? 📦"}, sender=ES)],
            },
            ensure_ascii=False,
            indent=4,
        ).encode(),
        _m("text", _op_in(2), ES),
    ),
    _onprem_case(
        "onprem-text-escaped-unicode",
        json.dumps(
            {
                "contacts": [_contact(DE, "Clara Fuchs")],
                "messages": [_om(3, "text", {"body": "Grüße aus Köln 👋 — bis später"})],
            }
        ).encode(),
        _m("text", _op_in(3), DE),
    ),
    _onprem_case(
        "onprem-image",
        _onprem_messages(
            _om(
                4,
                "image",
                {
                    "caption": "Beleg für die Reklamation",
                    "id": _op_media(4),
                    "mime_type": "image/jpeg",
                    "sha256": _sha_b64(4),
                },
            )
        ),
        _m("image", _op_in(4), DE),
    ),
    _onprem_case(
        "onprem-image-legacy-file-and-link",
        _onprem_messages(
            _om(
                5,
                "image",
                {
                    "file": f"/usr/local/wamedia/shared/{_op_media(5)}",
                    "id": _op_media(5),
                    "link": f"https://waba.360dialog.io/v1/media/{_op_media(5)}",
                    "mime_type": "image/jpeg",
                    "sha256": _sha_b64(5),
                },
            )
        ),
        _m("image", _op_in(5), DE),
    ),
    _onprem_case(
        "onprem-video",
        _onprem_messages(
            _om(
                6,
                "video",
                {
                    "caption": "Die Maschine macht dieses Geräusch",
                    "id": _op_media(6),
                    "mime_type": "video/mp4",
                    "sha256": _sha_b64(6),
                },
            )
        ),
        _m("video", _op_in(6), DE),
    ),
    _onprem_case(
        "onprem-document",
        _onprem_messages(
            _om(
                7,
                "document",
                {
                    "caption": "Vertrag unterschrieben",
                    "filename": "Mietvertrag_Fuchs_unterschrieben.pdf",
                    "id": _op_media(7),
                    "mime_type": "application/pdf",
                    "sha256": _sha_b64(7),
                },
            )
        ),
        _m("document", _op_in(7), DE),
    ),
    _onprem_case(
        "onprem-audio",
        _onprem_messages(
            _om(
                8,
                "audio",
                {"id": _op_media(8), "mime_type": "audio/mpeg", "sha256": _sha_b64(8)},
            )
        ),
        _m("audio", _op_in(8), DE),
    ),
    _onprem_case(
        "onprem-voice",
        _onprem_messages(
            _om(
                9,
                "voice",
                {
                    "id": _op_media(9),
                    "mime_type": "audio/ogg; codecs=opus",
                    "sha256": _sha_b64(9),
                },
            )
        ),
        _m("voice", _op_in(9), DE),
    ),
    _onprem_case(
        "onprem-sticker",
        _onprem_messages(
            _om(
                10,
                "sticker",
                {
                    "id": _op_media(10),
                    "metadata": {
                        "emojis": ["🥨", "😋"],
                        "is-first-party-sticker": 0,
                        "sticker-pack-id": "com.example.baeckerei.pack1",
                    },
                    "mime_type": "image/webp",
                    "sha256": _sha_b64(10),
                },
            )
        ),
        _m("sticker", _op_in(10), DE),
    ),
    _onprem_case(
        "onprem-location",
        _onprem_messages(
            _om(
                11,
                "location",
                {
                    "address": "Puerta del Sol, 28013 Madrid",
                    "latitude": 40.416775,
                    "longitude": -3.70379,
                    "name": "Kilómetro cero",
                    "url": "https://maps.example.es/sol",
                },
                sender=ES,
            ),
            contact=_contact(ES, "Lucía García"),
        ),
        _m("location", _op_in(11), ES),
    ),
    _onprem_case(
        "onprem-contacts-vcard",
        _onprem_messages(
            _om(
                12,
                "contacts",
                [
                    {
                        "addresses": [
                            {
                                "city": "München",
                                "country": "Deutschland",
                                "country_code": "de",
                                "state": "BY",
                                "street": "Leopoldstraße 12",
                                "type": "HOME",
                                "zip": "80802",
                            }
                        ],
                        "birthday": "1991-11-03",
                        "emails": [{"email": "jonas.weber@example.de", "type": "HOME"}],
                        "ims": [],
                        "name": {
                            "first_name": "Jonas",
                            "formatted_name": "Jonas Weber",
                            "last_name": "Weber",
                        },
                        "org": {"company": "Weber & Söhne GmbH"},
                        "phones": [{"phone": "+49 157 12340987", "type": "CELL", "wa_id": DE2}],
                        "urls": [],
                    }
                ],
            )
        ),
        _m("contacts", _op_in(12), DE),
    ),
    _onprem_case(
        "onprem-interactive-button-reply",
        _onprem_messages(
            _om(
                13,
                "interactive",
                {
                    "button_reply": {"id": "ja_bitte", "title": "Ja, bitte"},
                    "type": "button_reply",
                },
                context={"from": DISPLAY_PHONE, "id": _op_out(13)},
            )
        ),
        _m("interactive", _op_in(13), DE),
    ),
    _onprem_case(
        "onprem-interactive-list-reply",
        _onprem_messages(
            _om(
                14,
                "interactive",
                {
                    "list_reply": {
                        "description": "Lieferung am nächsten Werktag",
                        "id": "versand_express",
                        "title": "Express",
                    },
                    "type": "list_reply",
                },
                context={"from": DISPLAY_PHONE, "id": _op_out(14)},
            )
        ),
        _m("interactive", _op_in(14), DE),
    ),
    _onprem_case(
        "onprem-button",
        _onprem_messages(
            _om(
                15,
                "button",
                {"payload": "STORNIEREN", "text": "Termin absagen"},
                context={"from": DISPLAY_PHONE, "id": _op_out(15)},
            )
        ),
        _m("button", _op_in(15), DE),
    ),
    _onprem_case(
        "onprem-reaction",
        _onprem_messages(_om(16, "reaction", {"emoji": "🙏", "message_id": _op_out(16)})),
        _m("reaction", _op_in(16), DE),
    ),
    _onprem_case(
        "onprem-reaction-removed",
        _onprem_messages(_om(17, "reaction", {"emoji": "", "message_id": _op_out(16)})),
        _m("reaction", _op_in(17), DE),
    ),
    _onprem_case(
        "onprem-order",
        _onprem_messages(
            _om(
                18,
                "order",
                {
                    "catalog_id": "862133412345678",
                    "product_items": [
                        {
                            "currency": "EUR",
                            "item_price": "12.90",
                            "product_retailer_id": "sauerteig-starter",
                            "quantity": "1",
                        }
                    ],
                    "text": "Bitte an die Packstation",
                },
            )
        ),
        _m("order", _op_in(18), DE),
    ),
    _onprem_case(
        "onprem-system-user-changed-number",
        _onprem_bytes(
            {
                "messages": [
                    _om(
                        19,
                        "system",
                        {
                            "body": f"‎Clara Fuchs changed from {DE} to {DE_NEW}",
                            "new_wa_id": DE_NEW,
                            "type": "user_changed_number",
                        },
                    )
                ]
            }
        ),
        _m("system", _op_in(19), DE),
    ),
    _onprem_case(
        "onprem-system-customer-identity-changed",
        _onprem_bytes(
            {
                "messages": [
                    _om(
                        20,
                        "system",
                        {
                            "body": "El código de seguridad de Lucía ha cambiado",
                            "customer": ES,
                            "identity": "Sjvjlx8G6Z0=",
                            "type": "customer_identity_changed",
                        },
                        sender=ES,
                    )
                ]
            }
        ),
        _m("system", _op_in(20), ES),
    ),
    _onprem_case(
        "onprem-unknown-501",
        _onprem_messages(
            _om(
                21,
                "unknown",
                errors=[
                    {
                        "code": 501,
                        "details": "Message type is not currently supported",
                        "title": "Unknown message type",
                    }
                ],
            )
        ),
        _m("unknown", _op_in(21), DE),
    ),
    _onprem_case(
        "onprem-ephemeral",
        _onprem_messages(_om(22, "ephemeral")),
        _m("ephemeral", _op_in(22), DE),
    ),
    _onprem_case(
        "onprem-context-reply",
        _onprem_messages(
            _om(
                23,
                "text",
                {"body": "Passt, danke!"},
                context={"from": DISPLAY_PHONE, "id": _op_out(23)},
            )
        ),
        _m("text", _op_in(23), DE),
    ),
    _onprem_case(
        "onprem-context-forwarded",
        _onprem_messages(
            _om(
                24,
                "text",
                {"body": "Kettenbrief: bitte an 10 Leute weiterleiten!!!"},
                context={"forwarded": True, "frequently_forwarded": True},
            )
        ),
        _m("text", _op_in(24), DE),
    ),
    _onprem_case(
        "onprem-identity",
        _onprem_messages(
            _om(
                25,
                "text",
                {"body": "Neues Handy, gleiche Clara 😉"},
                identity={
                    "acknowledged": True,
                    "created_timestamp": 1717300000,
                    "hash": "t0w8KLe1fE0=",
                },
            )
        ),
        _m("text", _op_in(25), DE),
    ),
    _onprem_case(
        "onprem-referral",
        _onprem_messages(
            _om(
                26,
                "text",
                {"body": "Ich interessiere mich für das Angebot"},
                referral={
                    "body": "20 % auf alle Brote bis Sonntag",
                    "headline": "Frühlingsangebot",
                    "image": {
                        "id": _op_media(26),
                        "mime_type": "image/jpeg",
                        "sha256": _sha_b64(26),
                    },
                    "media_type": "image",
                    "source_id": "120208765432100123",
                    "source_type": "ad",
                    "source_url": "https://fb.me/3xAmPl3",
                },
            )
        ),
        _m("text", _op_in(26), DE),
    ),
    _onprem_case(
        "onprem-future-type-hologram",
        _onprem_messages(_om(27, "hologram", {"id": _op_media(27), "frames": 24})),
        _m("hologram", _op_in(27), DE),
    ),
    _onprem_case(
        "onprem-message-without-timestamp",
        _onprem_bytes(
            {"messages": [{"from": DE, "id": _op_in(28), "text": {"body": "?"}, "type": "text"}]}
        ),
        _m("text", _op_in(28), DE),
    ),
]


# --- On-Premise: statuses ------------------------------------------------------------------


def _os(n: int, status: str, recipient: str = DE, **extra: Any) -> dict[str, Any]:
    status_obj: dict[str, Any] = {
        "id": _op_out(n),
        "recipient_id": recipient,
        "status": status,
        "timestamp": str(1717401000 + n),
        **extra,
    }
    return dict(sorted(status_obj.items()))


_OP_STATUSES: list[Case] = [
    _onprem_case(
        "onprem-status-sent-with-conversation-cbp",
        _onprem_bytes(
            {
                "statuses": [
                    _os(
                        40,
                        "sent",
                        conversation={
                            "expiration_timestamp": 1717487440,
                            "id": "7d1c0f4e2b9a8c3d5e6f708192a3b4c5",
                            "origin": {"type": "business_initiated"},
                        },
                        pricing={
                            "billable": True,
                            "category": "business_initiated",
                            "pricing_model": "CBP",
                        },
                    )
                ]
            }
        ),
        _s("sent", _op_out(40), DE),
    ),
    _onprem_case(
        "onprem-status-delivered",
        _onprem_bytes(
            {
                "statuses": [
                    _os(
                        41,
                        "delivered",
                        ES,
                        conversation={
                            "id": "8e2d1f5a3c0b9d4e6f7a8091b2c3d4e5",
                            "origin": {"type": "customer_initiated"},
                        },
                        pricing={
                            "billable": True,
                            "category": "service",
                            "pricing_model": "CBP",
                        },
                    )
                ]
            }
        ),
        _s("delivered", _op_out(41), ES),
    ),
    _onprem_case(
        "onprem-status-read",
        _onprem_bytes({"statuses": [_os(42, "read")]}),
        _s("read", _op_out(42), DE),
    ),
    _onprem_case(
        "onprem-status-failed",
        _onprem_bytes(
            {
                "statuses": [
                    _os(
                        43,
                        "failed",
                        errors=[
                            {
                                "code": 470,
                                "href": "https://developers.facebook.com/docs/whatsapp/api/errors/",
                                "title": "Message failed to send because more than 24 hours "
                                "have passed since the customer last replied to this number",
                            }
                        ],
                    )
                ]
            }
        ),
        _s("failed", _op_out(43), DE),
    ),
    _onprem_case(
        "onprem-status-deleted",
        _onprem_bytes(
            {
                "statuses": [
                    {
                        "id": _op_in(44),
                        "recipient_id": DE,
                        "status": "deleted",
                        "timestamp": "1717401044",
                    }
                ]
            }
        ),
        _s("deleted", _op_in(44), DE),
    ),
    _onprem_case(
        "onprem-status-warning",
        _onprem_bytes(
            {
                "statuses": [
                    _os(
                        45,
                        "warning",
                        errors=[
                            {
                                "code": 2060,
                                "title": "Product not found in catalog",
                                "details": "brot-999 is not available",
                            }
                        ],
                    )
                ]
            }
        ),
        _s("warning", _op_out(45), DE),
    ),
    _onprem_case(
        "onprem-status-newer-message-recipient-id",
        _onprem_bytes(
            {
                "statuses": [
                    {
                        "id": _op_out(46),
                        "message": {"recipient_id": ES},
                        "status": "read",
                        "timestamp": "1717401046",
                        "type": "message",
                    }
                ]
            }
        ),
        _s("read", _op_out(46), ES),
    ),
    _onprem_case(
        "onprem-status-without-any-recipient",
        _onprem_bytes(
            {"statuses": [{"id": _op_out(47), "status": "delivered", "timestamp": "1717401047"}]}
        ),
        _s("delivered", _op_out(47), None),
    ),
]


# --- On-Premise: errors, batches, ordering, empties, leaf types, extras ---------------------

_OP_OTHER: list[Case] = [
    _onprem_case(
        "onprem-errors",
        _onprem_bytes(
            {
                "errors": [
                    {
                        "code": 1014,
                        "details": "Upload to the media server failed — Zeitüberschreitung",
                        "title": "Internal error",
                    },
                    {"code": "1026", "title": "Receiver incapable"},
                    {"details": "kein Code angegeben", "title": "Generic error"},
                ]
            }
        ),
        _e("1014"),
        _e("1026"),
        _e(None),
    ),
    _onprem_case(
        "onprem-batch-messages-then-statuses",
        _onprem_bytes(
            {
                "contacts": [_contact(DE, "Clara Fuchs"), _contact(ES, "Lucía García")],
                "messages": [
                    _om(60, "text", {"body": "Hallo 👋"}),
                    _om(61, "text", {"body": "¿Hola?"}, sender=ES),
                ],
                "statuses": [_os(62, "delivered"), _os(63, "read", ES), _os(64, "failed")],
            }
        ),
        _m("text", _op_in(60), DE),
        _m("text", _op_in(61), ES),
        _s("delivered", _op_out(62), DE),
        _s("read", _op_out(63), ES),
        _s("failed", _op_out(64), DE),
    ),
    _onprem_case(
        "onprem-statuses-key-before-messages-key",
        _onprem_bytes(
            {
                "statuses": [_os(65, "sent"), _os(66, "delivered")],
                "contacts": [_contact(DE, "Clara Fuchs")],
                "messages": [_om(67, "text", {"body": "Zuerst die Status"})],
            }
        ),
        _s("sent", _op_out(65), DE),
        _s("delivered", _op_out(66), DE),
        _m("text", _op_in(67), DE),
    ),
    _onprem_case(
        "onprem-errors-key-first",
        _onprem_bytes(
            {
                "errors": [{"code": 1000, "title": "Generic error"}],
                "messages": [_om(68, "text", {"body": "nach dem Fehler"})],
                "statuses": [_os(69, "read")],
            }
        ),
        _e("1000"),
        _m("text", _op_in(68), DE),
        _s("read", _op_out(69), DE),
    ),
    _onprem_case(
        "onprem-contacts-only-no-events",
        _onprem_bytes({"contacts": [_contact(DE, "Clara Fuchs")]}),
    ),
    _onprem_case("onprem-empty-messages-no-events", b'{"messages":[]}'),
    _onprem_case(
        "onprem-meta-block-ignored",
        _onprem_bytes(
            {
                "meta": {"api_status": "stable", "version": "2.53.2"},
                "messages": [_om(70, "text", {"body": "mit meta"})],
            }
        ),
        _m("text", _op_in(70), DE),
    ),
    _onprem_case(
        "onprem-leaf-values-of-unexpected-types",
        _onprem_bytes(
            {
                "contacts": [{"profile": None, "wa_id": int(DE)}],
                "messages": [
                    {
                        "from": DE,
                        "id": 12345,
                        "text": {"body": 42},
                        "timestamp": 1717400071,
                        "type": "text",
                    }
                ],
                "statuses": [
                    {
                        "id": 67890,
                        "recipient_id": ES,
                        "status": "read",
                        "timestamp": 1717400072,
                        "conversation": None,
                    }
                ],
                "errors": [{"code": 470, "title": None}],
            }
        ),
        _m("text", "12345", DE),
        _s("read", "67890", ES),
        _e("470"),
    ),
    _onprem_case(
        "onprem-unknown-extra-fields-everywhere",
        _onprem_bytes(
            {
                "x_hook": {"attempt": 3, "first_seen": "2024-06-03T09:33:20Z"},
                "contacts": [{"profile": {"name": "Clara", "x_emoji": "🌸"}, "wa_id": DE}],
                "x_list": [1, 2, "drei"],
                "messages": [
                    {**_om(72, "text", {"body": "Extras", "x_format": "md"}), "x_seen": False}
                ],
                "statuses": [{**_os(73, "read"), "x_shard": [None]}],
            }
        ),
        _m("text", _op_in(72), DE),
        _s("read", _op_out(73), DE),
    ),
]


# --- unknown shapes -------------------------------------------------------------------------

_UNKNOWN: list[Case] = [
    _unknown("unknown-empty-object", b"{}"),
    _unknown("unknown-empty-object-whitespace", b" \r\n{ }\n"),
    _unknown("unknown-page-object-empty-entry", b'{"object":"page","entry":[]}'),
    _unknown("unknown-hello-world", b'{"hello":"world"}'),
    _unknown(
        "unknown-entry-without-object",
        _cloud_bytes({"entry": [_entry(_change("messages", _value(statuses=[_cs(1, "read")])))]}),
    ),
    _unknown(
        "unknown-messenger-page",
        _cloud_bytes(
            {
                "object": "page",
                "entry": [
                    {
                        "id": "112233445566778",
                        "time": 1780000000123,
                        "messaging": [
                            {
                                "sender": {"id": "6543210987654321"},
                                "recipient": {"id": "112233445566778"},
                                "timestamp": 1780000000000,
                                "message": {"mid": "m_AbCdEf", "text": "Hallo Seite"},
                            }
                        ],
                    }
                ],
            }
        ),
    ),
    _unknown(
        "unknown-instagram-with-changes",
        _cloud_bytes(
            {
                "object": "instagram",
                "entry": [
                    {
                        "id": "17841400000000000",
                        "time": 1780000000,
                        "changes": [{"field": "messages", "value": {"messages": [{"id": "x"}]}}],
                    }
                ],
            }
        ),
    ),
    _unknown(
        "unknown-object-key-with-onprem-arrays",
        _onprem_bytes({"object": "page", "messages": [_om(80, "text", {"body": "?"})]}),
    ),
    _unknown(
        "unknown-entry-key-with-onprem-arrays",
        _onprem_bytes({"entry": [], "statuses": [_os(81, "read")]}),
    ),
    _unknown(
        "unknown-onprem-response-meta-only",
        b'{"meta":{"api_status":"stable","version":"2.53.2"}}',
    ),
    _unknown(
        "unknown-360dialog-test-ping",
        b'{"event":"test","message":"Webhook test from 360dialog Hub \\u2705"}',
    ),
    _unknown("unknown-non-container-fields", b'{"hello":[1,2,{"x":null}],"n":1.5e3}'),
]


# --- quarantined ----------------------------------------------------------------------------


def _with_bytes(body: bytes, placeholder: str, raw: bytes) -> bytes:
    assert placeholder.encode() in body
    return body.replace(placeholder.encode(), raw)


_GOOD_CLOUD_MESSAGE = _cm(100, "text", {"body": "gut"})
_GOOD_OP_MESSAGE = _om(100, "text", {"body": "gut"})


def _broken_value(**arrays: Any) -> bytes:
    return _cloud_bytes(_cloud(_entry(_change("messages", _value(**arrays)))))


_QUARANTINED: list[Case] = [
    _quarantined("quarantined-empty-body", b""),
    _quarantined("quarantined-whitespace-only", b" \r\n\t"),
    _quarantined("quarantined-truncated-cloud", CLOUD_TEXT[: len(CLOUD_TEXT) // 2]),
    _quarantined("quarantined-truncated-onprem-last-brace", ONPREM_TEXT[:-1]),
    _quarantined(
        "quarantined-trailing-comma-in-array",
        b'{"messages":[{"from":"4915198765432","id":"ABGGFRUQZ0hfAgaW4wMDAwMDk5",'
        b'"timestamp":"1717400099","type":"text","text":{"body":"Hallo"}},]}',
    ),
    _quarantined("quarantined-trailing-comma-in-object", b'{"statuses":[],}'),
    _quarantined("quarantined-invalid-utf8-in-id", b'{"messages":[{"id":"\xff"}]}'),
    _quarantined(
        "quarantined-invalid-utf8-in-unknown-cloud-field",
        _with_bytes(
            _cloud_messages({**_GOOD_CLOUD_MESSAGE, "x_note": "@@BAD@@"}),
            "@@BAD@@",
            b"caf\xc3\x28 \xed\xa0\x80",
        ),
    ),
    _quarantined(
        "quarantined-invalid-utf8-in-unknown-shape",
        b'{"hello":"Gr\xfc\xdfe aus M\xfcnchen"}',
    ),
    _quarantined(
        "quarantined-latin1-onprem-text",
        json.dumps(
            {"messages": [_om(101, "text", {"body": "Schöne Grüße"})]}, ensure_ascii=False
        ).encode("latin-1"),
    ),
    _quarantined("quarantined-json-array", b'[{"messages":[]}]'),
    _quarantined("quarantined-empty-array", b"[]"),
    _quarantined("quarantined-json-string", b'"whatsapp_business_account"'),
    _quarantined("quarantined-null", b"null"),
    _quarantined("quarantined-number", b"42"),
    _quarantined("quarantined-true", b"true"),
    _quarantined("quarantined-nan-top-level", b"NaN"),
    _quarantined(
        "quarantined-nan-timestamp",
        b'{"messages":[{"from":"4915198765432","id":"ABGGFRUQZ0hfAgaW4wMDAwMTAy",'
        b'"timestamp":NaN,"type":"text","text":{"body":"x"}}]}',
    ),
    _quarantined("quarantined-infinity", b'{"statuses":[{"id":"a","timestamp":Infinity}]}'),
    _quarantined("quarantined-bare-word", b'{"object":whatsapp_business_account,"entry":[]}'),
    _quarantined("quarantined-single-quotes", b"{'messages': []}"),
    _quarantined("quarantined-two-objects", b'{"messages":[]}{"statuses":[]}'),
    _quarantined("quarantined-form-encoded", b"messages=hallo&from=4915198765432"),
    _quarantined("quarantined-xml", b'<?xml version="1.0"?><messages/>'),
    # Cloud skeleton violations.
    _quarantined(
        "quarantined-cloud-entry-object",
        _cloud_bytes(
            {"object": "whatsapp_business_account", "entry": _entry(_change("messages", _value()))}
        ),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-entry-null",
        b'{"object":"whatsapp_business_account","entry":null}',
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-entry-element-string",
        _cloud_bytes({"object": "whatsapp_business_account", "entry": [WABA_ID]}),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-changes-object",
        _cloud_bytes(
            _cloud(
                {
                    "id": WABA_ID,
                    "changes": _change("messages", _value(messages=[_GOOD_CLOUD_MESSAGE])),
                }
            )
        ),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-changes-null",
        _cloud_bytes(_cloud({"id": WABA_ID, "changes": None})),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-change-string",
        _cloud_bytes(_cloud(_entry("messages"))),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-value-string",
        _cloud_bytes(_cloud(_entry(_change("messages", '{"messages":[]}')))),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-value-array",
        _cloud_bytes(_cloud(_entry(_change("messages", [_value(messages=[_GOOD_CLOUD_MESSAGE])])))),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-value-null",
        _cloud_bytes(_cloud(_entry(_change("messages", None)))),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-other-field-value-array",
        _cloud_bytes(_cloud(_entry(_change("account_update", [{"event": "FLAGGED"}]), time=1))),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-messages-object",
        _broken_value(messages=_GOOD_CLOUD_MESSAGE),
        "cloud",
    ),
    _quarantined("quarantined-cloud-messages-null", _broken_value(messages=None), "cloud"),
    _quarantined(
        "quarantined-cloud-messages-with-number-element",
        _broken_value(contacts=[_contact(DE, "Clara Fuchs")], messages=[_GOOD_CLOUD_MESSAGE, 5]),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-statuses-string",
        _broken_value(statuses="delivered"),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-statuses-with-null-element",
        _broken_value(statuses=[_cs(102, "read"), None]),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-errors-object",
        _broken_value(errors={"code": 130429, "title": "Rate limit hit"}),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-contacts-object",
        _broken_value(contacts=_contact(DE, "Clara"), messages=[_GOOD_CLOUD_MESSAGE]),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-contacts-string-element",
        _broken_value(contacts=[DE], messages=[_GOOD_CLOUD_MESSAGE]),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-second-entry-broken",
        _cloud_bytes(
            _cloud(
                _entry(_change("messages", _value(messages=[_GOOD_CLOUD_MESSAGE]))),
                _entry(_change("messages", _value(statuses={"id": "x"})), waba_id=WABA_ID_ES),
            )
        ),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-second-change-broken",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change("messages", _value(statuses=[_cs(103, "sent")])),
                    _change("messages", _value(messages=[[_GOOD_CLOUD_MESSAGE]])),
                )
            )
        ),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-other-then-broken-messages",
        _cloud_bytes(
            _cloud(
                _entry(
                    _change("account_update", {"event": "VERIFIED_ACCOUNT"}),
                    _change("messages", _value(errors="130429")),
                    time=1780000000,
                )
            )
        ),
        "cloud",
    ),
    # The arrays of a calls or smb_message_echoes change are skeleton containers too.
    _quarantined(
        "quarantined-cloud-calls-object",
        _cloud_change("calls", calls={"id": WACID, "event": "connect", "from": DE}),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-call-statuses-with-string-element",
        _cloud_change("calls", statuses=["RINGING"]),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-calls-contacts-object",
        _cloud_change(
            "calls",
            contacts=_contact(DE, "Clara Fuchs"),
            calls=[{"id": WACID, "event": "connect", "from": DE}],
        ),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-message-echoes-with-number-element",
        _cloud_change(
            "smb_message_echoes",
            message_echoes=[{"id": _wamid(DE, 305, outbound=True), "to": DE}, 305],
        ),
        "cloud",
    ),
    _quarantined(
        "quarantined-cloud-echo-errors-object",
        _cloud_change(
            "smb_message_echoes",
            message_echoes=[{"id": _wamid(DE, 306, outbound=True), "errors": {"code": 1}}],
        ),
        "cloud",
    ),
    # On-Premise skeleton violations.
    _quarantined(
        "quarantined-onprem-messages-object",
        _onprem_bytes({"messages": _GOOD_OP_MESSAGE}),
        "onprem",
    ),
    _quarantined("quarantined-onprem-messages-null", b'{"messages":null}', "onprem"),
    _quarantined(
        "quarantined-onprem-messages-with-number-element",
        _onprem_bytes({"contacts": [_contact(DE, "Clara")], "messages": [_GOOD_OP_MESSAGE, 5]}),
        "onprem",
    ),
    _quarantined(
        "quarantined-onprem-statuses-string-elements",
        _onprem_bytes({"statuses": ["sent", "delivered"]}),
        "onprem",
    ),
    _quarantined(
        "quarantined-onprem-statuses-nested-array",
        _onprem_bytes({"statuses": [[_os(104, "read")]]}),
        "onprem",
    ),
    _quarantined(
        "quarantined-onprem-errors-string",
        _onprem_bytes({"errors": "Internal error", "messages": [_GOOD_OP_MESSAGE]}),
        "onprem",
    ),
    _quarantined(
        "quarantined-onprem-contacts-object",
        _onprem_bytes({"contacts": _contact(DE, "Clara"), "messages": [_GOOD_OP_MESSAGE]}),
        "onprem",
    ),
    _quarantined(
        "quarantined-onprem-contacts-null",
        _onprem_bytes({"contacts": None, "messages": [_GOOD_OP_MESSAGE]}),
        "onprem",
    ),
    _quarantined(
        "quarantined-onprem-good-messages-broken-statuses-last",
        _onprem_bytes(
            {
                "messages": [_GOOD_OP_MESSAGE],
                "statuses": [_os(105, "read"), True],
            }
        ),
        "onprem",
    ),
]


CASES: tuple[Case, ...] = (
    *_CLOUD_MESSAGES,
    *_CLOUD_STATUSES,
    *_CLOUD_ERRORS,
    *_CLOUD_OTHER,
    *_CLOUD_BATCHES,
    *_CLOUD_IDENTITIES,
    *_OP_MESSAGES,
    *_OP_STATUSES,
    *_OP_OTHER,
    *_UNKNOWN,
    *_QUARANTINED,
)
