"""What happens to one batch: it becomes durable in PostgreSQL, or in the local spool.

The copy buffer decides when a batch is written; this decides how. A body PostgreSQL refuses
is kept raw as quarantined instead of failing its batch. With a spool, a batch PostgreSQL
does not take within `flush_timeout_ms` is appended to the spool instead, and later batches
go straight there until the drainer finds PostgreSQL back (`storage_recovered`). Without
one, a lost connection is retried until the batch's deadline. Either way `write` returns
only once the batch is durable somewhere, and raises otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from app.errors import StorageUnavailable
from app.metrics import Metrics
from app.records import IncomingRequest
from app.spool import Spool, SpooledRequest
from app.storage import Flushed, StorageRejected

logger = logging.getLogger(__name__)

Store = Callable[[list[IncomingRequest]], Awaitable[Flushed]]
Probe = Callable[[], Awaitable[None]]

_RETRY_FIRST_DELAY = 0.05  # seconds; doubles per failed attempt
_RETRY_MAX_DELAY = 1.0  # seconds


class BatchWriter:
    """Makes batches durable: `store` them in PostgreSQL, else append them to `spool`."""

    def __init__(
        self,
        store: Store,
        probe: Probe,
        spool: Spool | None,
        flush_timeout_s: float,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._probe = probe
        self.spool = spool
        self._flush_timeout = flush_timeout_s
        self.storage_down = False
        # Set while the spool may hold batches to replay: at start, and after every append.
        self.spool_pending = asyncio.Event()
        self.spool_pending.set()

    async def write(self, requests: list[IncomingRequest], give_up_at: float) -> None:
        """Make the batch durable; without a spool, retry lost connections until `give_up_at`
        (loop time)."""
        if self.spool is None:
            await self._store_retrying(requests, give_up_at)
            return
        if not self.storage_down:
            try:
                async with asyncio.timeout(self._flush_timeout):
                    await self.store_isolating(requests)
                return
            except (StorageUnavailable, TimeoutError) as exc:
                self.storage_down = True
                logger.warning(
                    "PostgreSQL did not take a batch, spooling: %s",
                    str(exc) or "timed out",
                    extra={"action": "storage_down", "requests": len(requests)},
                )
        await asyncio.to_thread(self.spool.append, _spooled(requests))
        self._metrics.inc("spooled_batches_total")
        self.spool_pending.set()

    async def store_isolating(self, requests: list[IncomingRequest]) -> None:
        """Store in PostgreSQL; a body it refuses is kept raw as quarantined, not lost."""
        started = time.perf_counter()
        try:
            self._count(await self._store(requests))
        except StorageRejected:
            await self._store_one_by_one(requests)
        self._metrics.observe("flush_duration_seconds", time.perf_counter() - started)
        self._metrics.observe("flush_rows", sum(request.rows for request in requests))

    async def probe(self) -> None:
        """Raise `StorageUnavailable` unless PostgreSQL answers."""
        await self._probe()

    def replayed(self) -> None:
        """A spooled batch committed: PostgreSQL is back, and the drain moved on."""
        self._metrics.inc("spool_replayed_batches_total")
        self.storage_recovered()

    def storage_recovered(self) -> None:
        """PostgreSQL took a write again: batches go to it, not to the spool."""
        if self.storage_down:
            logger.warning("PostgreSQL is back", extra={"action": "storage_up"})
        self.storage_down = False

    async def _store_retrying(self, requests: list[IncomingRequest], give_up_at: float) -> None:
        loop = asyncio.get_running_loop()
        delay = _RETRY_FIRST_DELAY
        while True:
            try:
                await self.store_isolating(requests)
                return
            except StorageUnavailable as exc:
                if loop.time() + delay >= give_up_at:
                    raise
                logger.warning(
                    "flush failed, retrying: %s",
                    exc,
                    extra={"action": "flush_retry", "requests": len(requests), "delay_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_DELAY)

    def _count(self, flushed: Flushed) -> None:
        self._metrics.inc("events_stored_total", amount=flushed.stored)
        self._metrics.inc("events_deduplicated_total", amount=flushed.events - flushed.stored)
        self._metrics.inc("dedup_conflicts_total", amount=flushed.conflicts)

    async def _store_one_by_one(self, requests: list[IncomingRequest]) -> None:
        """Find the body PostgreSQL refuses, and keep that one raw, quarantined."""
        for request in requests:
            try:
                self._count(await self._store([request]))
            except StorageRejected as exc:
                logger.error(
                    "body refused by PostgreSQL, quarantined: %s",
                    exc,
                    extra={"action": "body_quarantined", "request_id": str(request.id)},
                )
                self._count(await self._store([request.quarantined()]))


def _spooled(requests: list[IncomingRequest]) -> list[SpooledRequest]:
    """What the spool keeps of a request: enough to normalise it again on replay."""
    return [SpooledRequest(r.id, r.received_at, r.channel, r.body) for r in requests]
