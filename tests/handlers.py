"""Handlers for `WABAHOOK_HANDLER` in tests: they run in the dispatcher process and write what
they were called with, one JSON line per call, to the file `HANDLER_LOG` names."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from app.forwarding import Event

_raised: set[int] = set()


async def record(event: Event) -> None:
    """Record every call; raise at the first call for a message whose id asks for it."""
    with Path(os.environ["HANDLER_LOG"]).open("ab") as log:
        log.write(msgspec.json.encode(event) + b"\n")
    if "raise" in (event.message_id or "") and event.id not in _raised:
        _raised.add(event.id)
        raise RuntimeError(f"handler refuses event {event.id} once")


def not_async(event: Event) -> None:
    """Not a coroutine function: refused at start."""
