"""A byte budget per channel: one sender cannot fill the disk at the speed of the network.

Each channel has a token bucket of body bytes, refilled at `rate` bytes/s up to `burst`. A
body that finds too few tokens is refused with 503 and a Retry-After of when it would fit, so
360dialog redelivers it later and nothing is lost. The budget is per worker process: with N
workers a channel may store up to N times the rate.

The table of buckets is bounded: past `MAX_CHANNELS`, buckets that have refilled completely
(idle channels, which lose nothing by being forgotten) are dropped, then the oldest ones.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

MAX_CHANNELS = 65_536  # buckets kept at once


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float  # monotonic seconds


class ChannelBudget:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate  # bytes/s
        self.burst = burst  # bytes
        self._buckets: dict[str, _Bucket] = {}

    def take(self, channel: str, size: int, now: float | None = None) -> float:
        """Charge `size` bytes to the channel; return 0, or the seconds until it would fit."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(channel)
        if bucket is None:
            if len(self._buckets) >= MAX_CHANNELS:
                self._forget_idle(now)
            bucket = self._buckets[channel] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if size <= bucket.tokens:
            bucket.tokens -= size
            return 0.0
        return (size - bucket.tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        full = now - self.burst / self.rate
        for channel in [c for c, b in self._buckets.items() if b.updated <= full]:
            del self._buckets[channel]
        excess = len(self._buckets) - MAX_CHANNELS + 1
        for channel in list(self._buckets)[: max(excess, 0)]:
            del self._buckets[channel]


def retry_after(seconds: float, minimum: int) -> int:
    """A Retry-After value in whole seconds: when the body fits, and never below `minimum`."""
    return max(minimum, math.ceil(seconds))
