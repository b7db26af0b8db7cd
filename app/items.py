"""One event's item as a body of its own, in the format it arrived in (`forward_mode=items`).

Receivers written against Meta's examples (pywa among them) read only `entry[0].changes[0]`
and its first message or status, and drop the rest of a batched body. Handing each item on
in a body of its own, shaped as they expect, loses nothing for them. The item's own JSON is
copied byte for byte from the stored body; only the envelope around it is built:

- Cloud: `object`; one `entry` with its `id` (and `time`, which other fields carry); one
  change with its `field` and a `value` keeping `messaging_product`, `metadata` (the receiving
  number), the `contacts` element of the item's user (its name; matched by `wa_id` or
  `user_id`), and the item alone in its array. A change of another field (an `other` event) is
  kept whole: it is the item.
- On-Premise: the item alone in its top-level array, with its `contacts` element.

Everything else in the body belongs to other items, which get bodies of their own. The walk
follows `normalise` exactly (same arrays, same order), so the n-th item here is the event
stored with seq n; tests/unit/test_items.py checks that `normalise` of every item body gives
back exactly that one event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from app import normalise
from app import payloads as p

_CLOUD_VALUE_KEYS = ("messaging_product", "metadata")


class _ContactHead(msgspec.Struct):
    wa_id: Any = None
    user_id: Any = None


_contact_decoder = msgspec.json.Decoder(_ContactHead)


class ItemNotFound(ValueError):
    """The body holds no item with that position (not the body of the event)."""


def item_body(body: bytes, seq: int, wa_id: str | None, user_id: str | None) -> bytes:
    """The body holding just the item stored as event `seq` of `body`, whose user is `wa_id`
    or `user_id` (the event's columns)."""
    members = p.object_decoder.decode(body)
    if "object" in members or "entry" in members:
        return _cloud_item(members, seq, wa_id, user_id)
    found = _find(members, normalise.CHAT_ARRAYS, seq)
    if not isinstance(found, tuple):
        raise ItemNotFound(f"no item {seq} in the body")
    key, item = found
    return _object(_kept_members(members, key, item, wa_id, user_id, ()))


def _cloud_item(members: dict[str, msgspec.Raw], seq: int, wa_id: Any, user_id: Any) -> bytes:
    position = seq
    # Entries and changes are read as raw members, so their ids and fields stay as sent.
    for entry_raw in p.array_decoder.decode(members["entry"]):
        entry = p.object_decoder.decode(entry_raw)
        for change_raw in p.array_decoder.decode(entry.get("changes", b"[]")):
            change = p.object_decoder.decode(change_raw)
            field = p.any_decoder.decode(change.get("field", b"null"))
            value = p.object_decoder.decode(change["value"])
            arrays = (
                normalise.CHAT_ARRAYS
                if field == "messages"
                else normalise.element_arrays(field, value)
            )
            if arrays is None:  # the whole change is one `other` event
                if position == 0:
                    return _cloud_body(members, entry, change_raw)
                position -= 1
                continue
            found = _find(value, arrays, position)
            if isinstance(found, int):
                position = found
                continue
            key, item = found
            kept = _kept_members(value, key, item, wa_id, user_id, _CLOUD_VALUE_KEYS)
            one_change = {"value": _object(kept), "field": change["field"]}
            return _cloud_body(members, entry, _object(one_change))
    raise ItemNotFound(f"no item {seq} in the body")


def _find(
    members: dict[str, msgspec.Raw], arrays: normalise.Arrays, position: int
) -> tuple[str, msgspec.Raw] | int:
    """(array key, item) of the item at `position` among the arrays' elements, in body
    order; else how many positions remain after them."""
    for key, raw in members.items():
        if key in arrays:
            items = p.array_decoder.decode(raw)
            if position < len(items):
                return key, items[position]
            position -= len(items)
    return position


def _kept_members(
    members: dict[str, msgspec.Raw],
    key: str,
    item: msgspec.Raw,
    wa_id: Any,
    user_id: Any,
    also: tuple[str, ...],
) -> dict[str, bytes]:
    """The members a one-item body keeps, in the body's order."""
    kept: dict[str, bytes] = {}
    for name, raw in members.items():
        if name == key:
            kept[name] = b"[" + bytes(item) + b"]"
        elif name == "contacts":
            own = [c for c in p.array_decoder.decode(raw) if _belongs(c, wa_id, user_id)]
            if own:
                kept[name] = b"[" + b",".join(bytes(c) for c in own[:1]) + b"]"
        elif name in also:
            kept[name] = bytes(raw)
    return kept


def _belongs(contact: msgspec.Raw, wa_id: Any, user_id: Any) -> bool:
    head = _contact_decoder.decode(contact)
    return (wa_id is not None and normalise.leaf_text(head.wa_id) == wa_id) or (
        user_id is not None and normalise.leaf_text(head.user_id) == user_id
    )


def _cloud_body(
    members: dict[str, msgspec.Raw], entry: dict[str, msgspec.Raw], change: bytes
) -> bytes:
    kept_entry: dict[str, bytes] = {n: bytes(entry[n]) for n in ("id", "time") if n in entry}
    kept_entry["changes"] = b"[" + bytes(change) + b"]"
    body = {"object": bytes(members["object"])} if "object" in members else {}
    body["entry"] = b"[" + _object(kept_entry) + b"]"
    return _object(body)


def _object(members: dict[str, bytes]) -> bytes:
    """A JSON object of already encoded members; names are plain ASCII keys of the formats."""
    return (
        b"{" + b",".join(b'"%s":%s' % (name.encode(), raw) for name, raw in members.items()) + b"}"
    )
