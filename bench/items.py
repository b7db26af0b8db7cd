"""`items`: what forward_mode=items costs against bodies and events, per body of the bench mix.

For each body: `bodies` forwards it as stored (no work, one POST); `events` encodes an envelope
per event; `items` cuts a one-item body per event (`app.items`). Printed: the CPU to build what
is sent, per body and per POST, and POSTs per body; ratios against `events` of the same run.
The HTTP cost of each POST is the dispatcher's (about 50 µs in `bench dispatch`'s throughput
part), so the number of POSTs is what mostly sets the hand-on rate.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime

import msgspec

from app.forwarding import Event
from app.items import item_body
from app.normalise import Event as Stored
from app.normalise import normalise
from bench.bodies import NUMBERS, inbound_body, status_body

ROUNDS = 2000  # passes over the sample bodies


def _samples() -> dict[str, bytes]:
    rng = random.Random(5)
    number = NUMBERS[0]
    statuses = [(f"wamid.out.{n}", f"4915100000{n:03d}", "delivered", 1780000000) for n in range(3)]
    return {
        "one message": inbound_body(number, "text", rng, "0" * 12, 1780000000),
        "3 statuses": status_body(number, statuses),
        "3 entries x 3 statuses": status_body(number, statuses, entries=3),
    }


def _envelope(event: Stored, received_at: datetime) -> bytes:
    """What events mode POSTs for one event, as `app.forwarding` builds it."""
    return msgspec.json.encode(
        Event(
            id=1,
            channel="bench",
            kind=event.kind,
            type=event.type,
            message_id=event.message_id,
            wa_id=event.wa_id,
            user_id=event.user_id,
            group_id=event.group_id,
            phone_number_id=event.phone_number_id,
            waba_id=event.waba_id,
            received_at=received_at,
            event_ts=event.event_ts,
            request_id=uuid.UUID(int=1),
            payload=msgspec.Raw(event.payload.encode()),
        )
    )


def run() -> None:
    now = datetime.now(UTC)
    print(f"{'body':24s} {'mode':7s} {'POSTs':>5s} {'µs/body':>8s} {'µs/POST':>8s} vs events")
    for name, body in _samples().items():
        events = normalise(body).events
        costs: dict[str, float] = {}
        for mode in ("events", "items", "bodies"):
            started = time.process_time()
            for _ in range(ROUNDS):
                if mode == "events":
                    for event in events:
                        _envelope(event, now)
                elif mode == "items":
                    for event in events:
                        item_body(body, event.seq, event.wa_id, event.user_id)
            costs[mode] = (time.process_time() - started) / ROUNDS * 1e6
            posts = 1 if mode == "bodies" else len(events)
            ratio = costs[mode] / costs["events"] if costs["events"] else 0.0
            print(
                f"{name:24s} {mode:7s} {posts:5d} {costs[mode]:8.1f} "
                f"{costs[mode] / posts:8.1f} {ratio:8.2f}x"
            )
