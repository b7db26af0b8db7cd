"""Drain the spool into PostgreSQL, oldest batch first, and tell the writer when it is back.

Replay is idempotent: each spooled request keeps the id and arrival time it was acknowledged
with, its body is normalised again, and the usual dedup insert skips whatever a flush
committed before it was also spooled. A segment is deleted only after all its batches
committed.
"""

from __future__ import annotations

import asyncio
import logging

from app.batch_writer import BatchWriter
from app.errors import StorageUnavailable
from app.records import IncomingRequest, incoming
from app.spool import Spool, SpoolBatch

logger = logging.getLogger(__name__)

_FIRST_DELAY = 0.1  # seconds between attempts while PostgreSQL is away; doubles per failure
_MAX_DELAY = 2.0  # seconds


class SpoolDrainer:
    """One task per worker: replays its own spool and any orphaned by a dead process.

    It only decides when to replay: the writer's `spool_pending` says there may be work, and
    the writer stores each batch as a flush would.
    """

    def __init__(self, spools: list[Spool], writer: BatchWriter, max_events: int) -> None:
        self._spools = spools
        self._writer = writer
        self._max_events = max_events

    async def run(self) -> None:
        delay = _FIRST_DELAY
        pending = self._writer.spool_pending
        while True:
            await pending.wait()
            pending.clear()
            try:
                await self._drain()
                if self._writer.storage_down:
                    await self._writer.probe()
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
                pending.set()  # what was not replayed is still there
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)
                continue
            delay = _FIRST_DELAY
            self._writer.storage_recovered()

    async def _drain(self) -> None:
        for spool in self._spools:
            replayed = True
            while replayed:  # again: batches may have been spooled meanwhile
                replayed = False
                # One batch in memory at a time: the spool may hold far more than RAM should.
                batches = spool.pending()
                while batch := await asyncio.to_thread(next, batches, None):
                    replayed = True
                    # A flush's own store: a body PostgreSQL refuses is kept quarantined.
                    await self._writer.store_isolating(self._restored(batch))
                    await asyncio.to_thread(spool.release, batch)
                    self._writer.replayed()
                    logger.info(
                        "spooled batch replayed",
                        extra={
                            "action": "spool_replayed",
                            "segment": batch.segment,
                            "requests": len(batch.requests),
                        },
                    )

    def _restored(self, batch: SpoolBatch) -> list[IncomingRequest]:
        """The requests as acknowledged: same ids and times, the bodies normalised again."""
        return [
            incoming(r.body, r.channel, r.id, r.received_at, self._max_events)
            for r in batch.requests
        ]
