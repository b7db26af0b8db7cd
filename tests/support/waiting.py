"""Bounded waits for a condition on the system under test: poll it, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL_INTERVAL = 0.01  # seconds between two checks of a condition


class WaitTimedOut(AssertionError):
    """A condition did not hold within its bound."""


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    timeout: float = 20.0,
    what: str = "condition",
    interval: float = POLL_INTERVAL,
) -> None:
    """Poll a condition on the system under test (not a fixed sleep), bounded by `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise WaitTimedOut(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def wait_until_blocking(
    condition: Callable[[], bool],
    timeout: float = 20.0,
    what: str = "condition",
    interval: float = POLL_INTERVAL,
) -> None:
    """`wait_until` for code without an event loop (the benchmark runner)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"timed out waiting for {what}")
        time.sleep(interval)
