"""One arriving body as the rows a flush stores: a request row and its event rows.

The column tuples live beside the row builders so the two cannot drift apart; the batch
statement takes the rows' columns in this order (tests/unit/test_sql.py checks it).
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
import uuid
from datetime import UTC, datetime

import msgspec

from app.normalise import Event, normalise

REQUEST_COLUMNS = ("id", "received_at", "channel", "outcome", "sha256", "events", "body")
EVENT_COLUMNS = (
    "dedup_key",
    "request_id",
    "seq",
    "received_at",
    "channel",
    "kind",
    "type",
    "message_id",
    "wa_id",
    "user_id",
    "group_id",
    "phone_number_id",
    "waba_id",
    "event_ts",
    "payload",
)

RequestRow = tuple[uuid.UUID, datetime, str, str, bytes, int, bytes]
EventRow = tuple[
    bytes,
    uuid.UUID,
    int,
    datetime,
    str,
    str,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    datetime | None,
    str,
]


class IncomingRequest(msgspec.Struct):
    """An acknowledged-to-be body with everything needed to store it, or to spool and replay it."""

    id: uuid.UUID
    received_at: datetime
    channel: str
    body: bytes
    outcome: str
    sha256: bytes
    events: list[Event]
    format: str = ""  # "cloud" or "onprem" for a stored body

    @property
    def rows(self) -> int:
        """Rows this request adds to a batch: its own and one per event."""
        return 1 + len(self.events)

    def request_row(self) -> RequestRow:
        return (
            self.id,
            self.received_at,
            self.channel,
            self.outcome,
            self.sha256,
            len(self.events),
            self.body,
        )

    def event_rows(self) -> list[EventRow]:
        return [
            (
                dedup_key(event, self.channel, self.sha256),
                self.id,
                event.seq,
                self.received_at,
                self.channel,
                event.kind,
                event.type,
                event.message_id,
                event.wa_id,
                event.user_id,
                event.group_id,
                event.phone_number_id,
                event.waba_id,
                event.event_ts,
                event.payload,
            )
            for event in self.events
        ]

    def quarantined(self) -> IncomingRequest:
        """The same body kept raw with no events, for a body PostgreSQL refused to store."""
        return IncomingRequest(
            self.id, self.received_at, self.channel, self.body, "quarantined", self.sha256, []
        )


def incoming(
    body: bytes,
    channel: str,
    request_id: uuid.UUID | None = None,
    received_at: datetime | None = None,
    max_events: int = sys.maxsize,
) -> IncomingRequest:
    """Normalise a body as it arrives (or, with its original id and time, as it is replayed)."""
    normalised = normalise(body, max_events)
    return IncomingRequest(
        id=request_id or uuid7(),
        received_at=received_at or datetime.now(UTC),
        channel=channel,
        body=body,
        outcome=normalised.outcome,
        sha256=hashlib.sha256(body).digest(),
        events=normalised.events,
        format=normalised.format,
    )


_KEY_ENCODER = msgspec.json.Encoder()
_id_bits = random.Random()  # seeded from os.urandom


# docs/protocol.md §7: the kinds whose elements carry an id of their own, keyed by it.
ID_KINDS = frozenset({"message", "status", "echo", "call"})


def dedup_key(event: Event, channel: str, body_sha256: bytes) -> bytes:
    """docs/protocol.md §7: (kind, id, status-or-type) within the business number, else the channel.

    Events without an id are only merged with the same event of an exact redelivery: the same
    bytes on the same channel, at the same position.
    """
    if event.message_id is not None and event.kind in ID_KINDS:
        scope = ("number", event.phone_number_id) if event.phone_number_id else ("channel", channel)
        material = _KEY_ENCODER.encode((event.kind, event.message_id, event.type, *scope))
    else:
        material = _KEY_ENCODER.encode(("body", channel, body_sha256.hex(), event.seq))
    return hashlib.blake2b(material, digest_size=16).digest()


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7) that needs no round trip to PostgreSQL.

    The random bits come from the process's PRNG (seeded from the OS at start): ids must be
    unique, not unguessable, and a system call per request would be the costlier part.
    """
    unix_ms = time.time_ns() // 1_000_000
    bits = _id_bits.getrandbits(74)
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76 | (bits >> 62 & 0xFFF) << 64  # version, rand_a
    value |= 0b10 << 62 | bits & (1 << 62) - 1  # variant, rand_b
    return uuid.UUID(int=value)
