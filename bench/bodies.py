"""360dialog webhook bodies for every benchmark, rendered from one set of templates.

Two consumers share this module so that they send the same bytes:

- `Mix` is the realistic traffic stream the locustfile sends: Cloud API bodies (inbound
  text, media, interactive replies, reactions, ...), `sent -> delivered -> read` status
  callbacks for the reply to each inbound message (360dialog's sizing rule: about three
  status bodies per inbound message), occasional multi-entry batches, a few bodies of
  hundreds of KB, a share of On-Premise numbers and about 2% exact redeliveries. It is a
  pure function of `(seed, run)`, so the runner can rebuild any body from its index.
- `Template` is a body with holes for its message ids, which `bench.wrk` turns into a Lua
  script so that wrk can send fresh ids at full speed.

Every unique id is a fixed-width 20-hex-digit key inside a realistic id, so a body's size does
not depend on which key it carries.
"""

from __future__ import annotations

import json
import random
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

KEY_HEX: Final = 20
BASE_TS: Final = 1_780_000_000
CLOUD_OBJECT: Final = "whatsapp_business_account"
WABA_ID: Final = "104455667788990"


def cloud_message_id(key: str) -> str:
    """A Cloud `wamid`: Meta's base64 framing around a 20-hex-digit key."""
    return f"wamid.HBgNNDkxNTE5ODc2NTQzMhUCABIYFD{key}AA=="


def onprem_message_id(key: str) -> str:
    return f"ABGGFRUQZ0hf{key}"


@dataclass(frozen=True)
class Number:
    """One business phone number, and the webhook URL 360dialog posts its traffic to."""

    channel: str
    cloud: bool
    phone_number_id: str
    display: str


NUMBERS: Final = (
    Number("cloud-de", True, "190011223344556", "4989123456789"),
    Number("cloud-at", True, "190011223344557", "4312345678901"),
    Number("cloud-ch", True, "190011223344558", "41441234567"),
    Number("onprem-de", False, "", "4930123456789"),
)
# Cloud carries most traffic: On-Premise numbers are the stragglers (spec section 1).
NUMBER_WEIGHTS: Final = (40, 25, 25, 10)

_FIRST = ("Clara", "Jonas", "Lea", "Mehmet", "Sofia", "Lukas", "Mia", "Ahmad", "Emma", "Noah")
_LAST = ("Fuchs", "Keller", "Yilmaz", "Wagner", "Novak", "Huber", "Rossi", "Weber")
_TEXTS = (
    "Haben Sie samstags geöffnet?",
    "Ist meine Bestellung schon unterwegs?",
    "Danke, das hat geklappt 👍",
    "Können Sie mich bitte zurückrufen?",
    "Ich möchte meinen Termin am Donnerstag verschieben.",
    "Wo finde ich die Rechnung für März?",
    "ok",
    "Hallo! Gibt es das Modell auch in Blau und in Größe 42? Im Laden war es ausverkauft.",
)


def _customer(rng: random.Random) -> tuple[str, str]:
    n = rng.randrange(5000)
    return f"49151{n:08d}", f"{_FIRST[n % len(_FIRST)]} {_LAST[n % len(_LAST)]}"


def _dumps(doc: Any, cloud: bool) -> bytes:
    # Meta escapes non-ASCII as \uXXXX; the On-Premise client sends UTF-8 as is.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=cloud).encode()


# -- message payloads (the part under the key named by `type`) ------------------------------


def _media(rng: random.Random, cloud: bool, mime: str, **extra: Any) -> dict[str, Any]:
    media_id = str(rng.randrange(10**15, 10**16)) if cloud else f"{rng.getrandbits(128):032x}"
    return {"mime_type": mime, "sha256": f"{rng.getrandbits(256):064x}", "id": media_id, **extra}


def _payload(kind: str, rng: random.Random, cloud: bool, key: str) -> dict[str, Any]:
    """The type-specific members of an inbound message of `kind`."""
    if kind == "text":
        return {"text": {"body": rng.choice(_TEXTS)}}
    if kind == "image":
        return {"image": _media(rng, cloud, "image/jpeg", caption="Foto vom Schaden")}
    if kind == "video":
        return {"video": _media(rng, cloud, "video/mp4")}
    if kind == "document":
        return {"document": _media(rng, cloud, "application/pdf", filename="Rechnung.pdf")}
    if kind == "audio":
        return {"audio": _media(rng, cloud, "audio/ogg; codecs=opus", voice=True)}
    if kind == "voice":
        return {"voice": _media(rng, cloud, "audio/ogg; codecs=opus")}
    if kind == "sticker":
        return {"sticker": _media(rng, cloud, "image/webp", animated=False)}
    if kind == "location":
        return {"location": {"latitude": 48.1374, "longitude": 11.5755, "name": "Marienplatz"}}
    if kind == "button_reply":
        reply = {"id": "confirm_yes", "title": "Ja, bestätigen"}
        return {"interactive": {"type": "button_reply", "button_reply": reply}}
    if kind == "list_reply":
        reply = {"id": "branch_munich", "title": "München", "description": "Innenstadt"}
        return {"interactive": {"type": "list_reply", "list_reply": reply}}
    if kind == "button":
        return {"button": {"payload": "STOP_PROMO", "text": "Keine Werbung mehr"}}
    if kind == "reaction":
        target = cloud_message_id(key[::-1]) if cloud else onprem_message_id(key[::-1])
        return {"reaction": {"message_id": target, "emoji": rng.choice(("👍", "❤️", "😂", ""))}}
    raise ValueError(kind)


# Inbound message types and their shares; interactive ones report their `type` as "interactive".
_CLOUD_KINDS: Final = (
    ("text", 56),
    ("image", 9),
    ("audio", 6),
    ("video", 2),
    ("document", 3),
    ("sticker", 3),
    ("location", 1),
    ("button_reply", 8),
    ("list_reply", 4),
    ("button", 2),
    ("reaction", 6),
)
_ONPREM_KINDS: Final = (
    ("text", 65),
    ("image", 10),
    ("voice", 8),
    ("document", 4),
    ("location", 2),
    ("button_reply", 6),
    ("button", 2),
    ("reaction", 3),
)


def _message(kind: str, rng: random.Random, cloud: bool, key: str, wa_id: str, ts: int) -> Any:
    msg_type = "interactive" if kind in ("button_reply", "list_reply") else kind
    msg_id = cloud_message_id(key) if cloud else onprem_message_id(key)
    message: dict[str, Any] = {"from": wa_id, "id": msg_id, "timestamp": str(ts), "type": msg_type}
    if kind == "button":
        message["context"] = {"from": "4989123456789", "id": cloud_message_id(key[::-1])}
    message.update(_payload(kind, rng, cloud, key))
    return message


def _status(
    status: str, cloud: bool, key: str, wa_id: str, ts: int, origin: str = "service"
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": cloud_message_id(key) if cloud else onprem_message_id(key),
        "status": status,
        "timestamp": str(ts),
        "recipient_id": wa_id,
    }
    if status != "read":
        conversation: dict[str, Any] = {"id": f"{key}{key[:12]}", "origin": {"type": origin}}
        if status == "sent":
            conversation["expiration_timestamp"] = str(ts + 86_400)
        doc["conversation"] = conversation
        pricing: dict[str, Any] = {"billable": True, "pricing_model": "CBP", "category": origin}
        if cloud:
            pricing.update(pricing_model="PMP", type="free_customer_service")
        doc["pricing"] = pricing
    return doc


# -- envelopes ------------------------------------------------------------------------------


def _cloud_value(number: Number, **members: Any) -> dict[str, Any]:
    metadata = {"display_phone_number": number.display, "phone_number_id": number.phone_number_id}
    return {"messaging_product": "whatsapp", "metadata": metadata, **members}


def _cloud(*changes: tuple[Number, dict[str, Any]], entries: int = 1) -> dict[str, Any]:
    """A Cloud envelope; with `entries > 1` the changes are spread over that many entries."""
    items = [{"value": _cloud_value(n, **members), "field": "messages"} for n, members in changes]
    per = -(-len(items) // entries)
    entry = [{"id": WABA_ID, "changes": items[i : i + per]} for i in range(0, len(items), per)]
    return {"object": CLOUD_OBJECT, "entry": entry}


def inbound_body(
    number: Number, kind: str, rng: random.Random, key: str, ts: int, pad_to: int = 0
) -> bytes:
    """One inbound message body; `pad_to` grows a text body to that many bytes."""
    wa_id, name = _customer(rng)
    message = _message(kind, rng, number.cloud, key, wa_id, ts)
    contacts = [{"profile": {"name": name}, "wa_id": wa_id}]
    doc = (
        _cloud((number, {"contacts": contacts, "messages": [message]}))
        if number.cloud
        else {"contacts": contacts, "messages": [message]}
    )
    if pad_to:
        if kind != "text":
            raise ValueError("only text bodies can be padded")
        short = len(_dumps(doc, number.cloud))
        message["text"]["body"] += "x" * max(0, pad_to - short)
    return _dumps(doc, number.cloud)


def status_body(number: Number, items: list[tuple[str, str, str, int]], entries: int = 1) -> bytes:
    """Status callbacks; each item is (status, key, recipient wa_id, timestamp)."""
    statuses = [_status(s, number.cloud, key, wa_id, ts) for s, key, wa_id, ts in items]
    if not number.cloud:
        return _dumps({"statuses": statuses}, cloud=False)
    if entries > 1:
        return _dumps(
            _cloud(*((number, {"statuses": [s]}) for s in statuses), entries=entries), True
        )
    return _dumps(_cloud((number, {"statuses": statuses})), cloud=True)


def error_body(number: Number, key: str) -> bytes:
    # The trace makes each error body unique: identical bytes would be a redelivery.
    detail = f"Throughput level of the number was exceeded (trace {key})."
    if not number.cloud:
        errors = [{"code": 1015, "title": "Too many requests", "details": detail}]
        return _dumps({"errors": errors}, cloud=False)
    error = {
        "code": 130429,
        "title": "Rate limit hit",
        "message": "(#130429) Rate limit hit",
        "error_data": {"details": detail},
    }
    return _dumps(_cloud((number, {"errors": [error]})), cloud=True)


def template_status_body(ts: int, template_id: int) -> bytes:
    """A Cloud change of another `field`: one `kind=other` event, no message id."""
    value = {
        "event": "APPROVED",
        "message_template_id": template_id,
        "message_template_name": "order_update",
        "message_template_language": "de",
        "reason": "NONE",
    }
    change = {"value": value, "field": "message_template_status_update"}
    doc = {"object": CLOUD_OBJECT, "entry": [{"id": WABA_ID, "time": ts, "changes": [change]}]}
    return _dumps(doc, cloud=True)


# -- the realistic stream -------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    index: int
    channel: str
    body: bytes
    kind: str  # what the body is, for locust's per-name statistics
    redelivery_of: int | None = None


class Mix:
    """360dialog's traffic for a set of numbers, as an endless deterministic stream.

    Each inbound message gets a reply whose `sent`, `delivered` and `read` callbacks follow,
    interleaved with other traffic and always in that order for one message.
    """

    REDELIVERY = 0.02  # share of bodies that repeat an earlier body byte for byte
    STATUS = 0.75  # chance of a status body while replies await callbacks: 3 per inbound
    STATUS_BATCH = 0.04  # share of Cloud status bodies carrying several statuses
    MULTI_ENTRY = 0.3  # of those batches, the share spread over several `entry` elements
    LARGE = 0.003  # share of inbound texts of hundreds of KB
    ERRORS = 0.002
    OTHER_FIELD = 0.003

    def __init__(self, seed: int = 1, run: str = "000000") -> None:
        if not re.fullmatch(r"[0-9a-f]{6}", run):
            raise ValueError("run must be 6 lowercase hex digits")
        self.seed = seed
        self.run = run

    def __iter__(self) -> Iterator[Request]:
        rng = random.Random(self.seed)
        recent: deque[Request] = deque(maxlen=2000)
        # Replies awaiting callbacks: [number, key, wa_id, statuses sent so far].
        pending: list[list[Any]] = []
        serial = 0
        kinds = {
            True: ([k for k, _ in _CLOUD_KINDS], [w for _, w in _CLOUD_KINDS]),
            False: ([k for k, _ in _ONPREM_KINDS], [w for _, w in _ONPREM_KINDS]),
        }
        index = 0
        while True:
            ts = BASE_TS + index // 50
            if recent and rng.random() < self.REDELIVERY:
                first = rng.choice(recent)
                yield Request(index, first.channel, first.body, "redelivery", first.index)
                index += 1
                continue
            serial += 1
            key = f"{self.run}{serial:014x}"
            roll = rng.random()
            if pending and (rng.random() < self.STATUS or len(pending) > 200):
                request = self._status(index, rng, pending, ts)
            elif roll < self.ERRORS:
                number = rng.choices(NUMBERS, NUMBER_WEIGHTS)[0]
                request = Request(index, number.channel, error_body(number, key), "error")
            elif roll < self.ERRORS + self.OTHER_FIELD:
                body = template_status_body(ts + index, serial)
                request = Request(index, NUMBERS[0].channel, body, "other")
            else:
                number = rng.choices(NUMBERS, NUMBER_WEIGHTS)[0]
                names, weights = kinds[number.cloud]
                kind = rng.choices(names, weights)[0]
                pad = rng.randrange(100_000, 400_000) if rng.random() < self.LARGE else 0
                kind = "text" if pad else kind
                body = inbound_body(number, kind, rng, key, ts, pad_to=pad)
                label = f"{'cloud' if number.cloud else 'onprem'}:{'large' if pad else kind}"
                request = Request(index, number.channel, body, label)
                # The business replies; its callbacks carry a key of their own.
                serial += 1
                reply_key = f"{self.run}{serial:014x}"
                pending.append([number, reply_key, _customer(rng)[0], 0])
            recent.append(request)
            yield request
            index += 1

    def _status(self, index: int, rng: random.Random, pending: list[list[Any]], ts: int) -> Request:
        # Callbacks of recent replies interleave; pick among the oldest few.
        first = pending[rng.randrange(min(len(pending), 8))]
        number = first[0]
        batch = [first]
        if number.cloud and rng.random() < self.STATUS_BATCH:
            others = [p for p in pending[:32] if p[0] is number and p is not first]
            batch += others[: rng.randrange(1, 4)]
        items = []
        for reply in batch:
            items.append((("sent", "delivered", "read")[reply[3]], reply[1], reply[2], ts))
            reply[3] += 1
            if reply[3] == 3:
                pending.remove(reply)
        entries = 2 if len(items) > 1 and rng.random() < self.MULTI_ENTRY else 1
        label = "cloud:status" if number.cloud else "onprem:status"
        if len(items) > 1:
            label = "cloud:status-batch"
        return Request(index, number.channel, status_body(number, items, entries), label)


class LargeStream:
    """Inbound texts of `size` bytes with fresh ids: the 3 MB share sent beside the mix.

    Rendered from a template, so a multi-MB body costs a join, not a JSON encoding.
    """

    def __init__(self, run: str, size: int = 3_000_000) -> None:
        self.run = run
        self.size = size
        self._template = cloud_text(size)

    def body(self, index: int) -> Request:
        key = f"{self.run}f{index:013x}"
        return Request(index, self._template.channel, self._template.render([key]), "cloud:3mb")


# -- templates for wrk ----------------------------------------------------------------------


_HOLE = "@{:019d}"  # 20 characters, as wide as a key, and '@' never occurs in a body
_HOLE_RE = re.compile(rb"@(\d{19})")


@dataclass(frozen=True)
class Template:
    """A body with one hole per distinct key; `render` fills them with real keys."""

    name: str
    channel: str
    chunks: tuple[bytes, ...]  # the body split at the holes
    slots: tuple[int, ...]  # which key fills the hole after chunks[i]

    @property
    def keys(self) -> int:
        return max(self.slots, default=-1) + 1

    @property
    def size(self) -> int:
        return sum(map(len, self.chunks)) + KEY_HEX * len(self.slots)

    def render(self, keys: list[str]) -> bytes:
        parts = [self.chunks[0]]
        for slot, chunk in zip(self.slots, self.chunks[1:], strict=True):
            parts += (keys[slot].encode(), chunk)
        return b"".join(parts)


def make_template(name: str, channel: str, build: Callable[[list[str]], bytes]) -> Template:
    """Render `build` with placeholder keys and cut the body at them."""
    holes = [_HOLE.format(i) for i in range(8)]
    body = build(holes)
    pieces = _HOLE_RE.split(body)
    chunks = tuple(pieces[0::2])
    slots = tuple(int(s) for s in pieces[1::2])
    if not slots:
        raise ValueError(f"template {name} has no key")
    return Template(name, channel, chunks, slots)


def _fixed(seed: int) -> random.Random:
    return random.Random(seed)


def cloud_text(size: int = 1024) -> Template:
    """A Cloud text message padded to exactly `size` bytes."""
    number = NUMBERS[0]
    return make_template(
        f"cloud-text-{size}",
        number.channel,
        lambda k: inbound_body(number, "text", _fixed(1), k[0], BASE_TS, pad_to=size),
    )


def single_event_templates() -> list[Template]:
    """One event per body, in mix-like proportions: the stream `compare --body mix` cycles."""
    cloud, onprem = NUMBERS[0], NUMBERS[3]

    def inbound(number: Number, kind: str) -> Template:
        build = lambda k: inbound_body(number, kind, _fixed(2), k[0], BASE_TS)  # noqa: E731
        return make_template(f"{number.channel}:{kind}", number.channel, build)

    def status(number: Number, state: str) -> Template:
        build = lambda k: status_body(number, [(state, k[0], "4915100000001", BASE_TS)])  # noqa: E731
        return make_template(f"{number.channel}:{state}", number.channel, build)

    # 20 slots: 4 inbound and 12 statuses on Cloud (3 per inbound), then 1 and 3 On-Premise.
    kinds = ("text", "image", "button_reply", "text")
    out = [inbound(cloud, k) for k in kinds]
    out += [status(cloud, s) for _ in kinds for s in ("sent", "delivered", "read")]
    out += [inbound(onprem, "text")]
    out += [status(onprem, s) for s in ("sent", "delivered", "read")]
    return out


def template_key(run: str, thread: int, slot: int, counter: int) -> str:
    """The key wrk puts in a hole; `bench.wrk` implements the same layout in Lua."""
    return f"{run[:5]}{thread:02x}{slot:x}{counter:012x}"
