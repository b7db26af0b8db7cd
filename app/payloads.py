"""The parts of a webhook body that normalisation reads, as msgspec Structs.

Only containers are typed (docs/protocol.md §6): a Struct or `list[...]` fails on a
container of the wrong JSON type, while leaf values stay `Any`, since WhatsApp sends
timestamps and ids as strings or numbers. Unknown fields are skipped, and every element
that becomes an event is kept as `msgspec.Raw`: its bytes are stored as received, never
re-encoded. Decoders are built once, here.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Raw, Struct, field

CLOUD_OBJECT = "whatsapp_business_account"
# Top-level keys of an On-Premise body; any one of them (and no `object`/`entry`) means On-Premise.
ONPREM_KEYS = frozenset({"messages", "statuses", "errors", "contacts"})


class AnyObject(Struct):
    """A JSON object whose content is not read (contacts, nested errors)."""


class MessageHead(Struct):
    id: Any = None
    type: Any = None
    from_: Any = field(default=None, name="from")
    from_user_id: Any = None  # Cloud: the sender's business-scoped user id; `from` may be absent
    group_id: Any = None  # Cloud: the group the message was sent in
    timestamp: Any = None
    # Errors of an `unknown`/`unsupported` message belong to it; they are only checked.
    errors: list[AnyObject] = []


class StatusHead(Struct):
    id: Any = None
    status: Any = None
    recipient_id: Any = None  # for a group, the group's id
    recipient_user_id: Any = None  # Cloud: set when the business addressed a user id
    recipient_type: Any = None  # Cloud: "individual" or "group"
    timestamp: Any = None
    message: Any = None  # newer On-Premise clients: {"recipient_id": ..., "type": "message"}
    errors: list[AnyObject] = []


class EchoHead(Struct):
    """An element of `message_echoes` (Cloud field `smb_message_echoes`): a message the business
    sent from the WhatsApp Business app, addressed `to` a user."""

    id: Any = None
    type: Any = None
    to: Any = None
    to_user_id: Any = None
    group_id: Any = None
    timestamp: Any = None
    errors: list[AnyObject] = []


class CallHead(Struct):
    """An element of `calls` (Cloud field `calls`): a `connect` or `terminate` of a call."""

    id: Any = None
    event: Any = None
    direction: Any = None  # "USER_INITIATED" or "BUSINESS_INITIATED"
    from_: Any = field(default=None, name="from")
    from_user_id: Any = None
    to: Any = None
    to_user_id: Any = None
    timestamp: Any = None


class ErrorHead(Struct):
    code: Any = None


class Change(Struct):
    field: Any = None
    value: Raw = Raw()  # empty when absent


class Entry(Struct):
    id: Any = None
    time: Any = None
    changes: list[Change] = []


# A JSON object with its members in body order: the walk follows the keys as they appear.
object_decoder = msgspec.json.Decoder(dict[str, Raw])
array_decoder = msgspec.json.Decoder(list[Raw])
objects_decoder = msgspec.json.Decoder(list[AnyObject])
entries_decoder = msgspec.json.Decoder(list[Entry])
message_decoder = msgspec.json.Decoder(MessageHead)
status_decoder = msgspec.json.Decoder(StatusHead)
echo_decoder = msgspec.json.Decoder(EchoHead)
call_decoder = msgspec.json.Decoder(CallHead)
error_decoder = msgspec.json.Decoder(ErrorHead)
any_decoder = msgspec.json.Decoder()
