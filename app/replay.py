"""Drain the spool into PostgreSQL, oldest batch first, and tell the flush path when it is back.

Replay is idempotent: each spooled request keeps the id and arrival time it was acknowledged
with, its body is normalised again, and the usual dedup insert skips whatever a flush
committed before it was also spooled. A segment is deleted only after all its batches
committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app.errors import StorageUnavailable
from app.group_commit import GroupCommit
from app.records import IncomingRequest, incoming
from app.spool import Spool, SpoolBatch, SpooledRequest

logger = logging.getLogger(__name__)

_FIRST_DELAY = 0.1  # seconds between attempts while PostgreSQL is away; doubles per failure
_MAX_DELAY = 2.0  # seconds

Probe = Callable[[], Awaitable[None]]


def spooled(requests: list[IncomingRequest]) -> list[SpooledRequest]:
    return [SpooledRequest(r.id, r.received_at, r.channel, r.body) for r in requests]


def restored(batch: SpoolBatch) -> list[IncomingRequest]:
    return [incoming(r.body, r.channel, r.id, r.received_at) for r in batch.requests]


class SpoolDrainer:
    """One task per worker: replays its own spool and any orphaned by a dead process."""

    def __init__(self, spools: list[Spool], probe: Probe, group_commit: GroupCommit) -> None:
        self._spools = spools
        self._probe = probe
        self._group_commit = group_commit
        self._wake = asyncio.Event()
        self._wake.set()  # a spool left by a previous run drains at start

    def wake(self) -> None:
        """Something was spooled, or PostgreSQL went away: look again."""
        self._wake.set()

    async def run(self) -> None:
        delay = _FIRST_DELAY
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
                if self._group_commit.storage_down:
                    await self._probe()
            except Exception as exc:  # the drain must outlive any failure, and retry it
                if isinstance(exc, StorageUnavailable):
                    logger.info(
                        "spool drain waits for PostgreSQL: %s",
                        exc,
                        extra={"action": "spool_drain_waiting", "delay_s": delay},
                    )
                else:
                    logger.exception(
                        "spool drain failed, retrying",
                        extra={"action": "spool_drain_failed", "delay_s": delay},
                    )
                self._wake.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)
                continue
            delay = _FIRST_DELAY
            self._group_commit.storage_recovered()

    async def _drain(self) -> None:
        for spool in self._spools:
            replayed = True
            while replayed:  # again: batches may have been spooled meanwhile
                replayed = False
                # One batch in memory at a time: the spool may hold far more than RAM should.
                batches = spool.pending()
                while batch := await asyncio.to_thread(next, batches, None):
                    replayed = True
                    # The flush path's write: a body PostgreSQL refuses is kept quarantined.
                    await self._group_commit.write_isolating(restored(batch))
                    await asyncio.to_thread(spool.release, batch)
                    self._group_commit.storage_recovered()
                    logger.info("spooled batch replayed",
                                extra={"action": "spool_replayed", "segment": batch.segment,
                                       "requests": len(batch.requests)})  # fmt: skip
