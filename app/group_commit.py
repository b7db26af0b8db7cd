"""The copy buffer: requests wait here for the batch that makes them durable.

Many requests share one COPY and one COMMIT. A flush starts as soon as a flush slot is
free, so a lone request is never held back for a timer; while every slot is busy the
buffer grows, and the next flush takes all of it (capped by rows and bytes). The timer
only bounds the wait: a row that has waited `flush_ms` with every slot busy gets an extra
flush of its own, on a spare pool connection. This is PostgreSQL's WAL-writer pattern.

The buffer is bounded: past `buffer_rows`/`buffer_bytes` new requests wait for room, and
past `backpressure_ms` they are refused (`Overloaded`, answered 503). A request that waits
longer than `ack_deadline_ms` for its batch is refused too (`NotDurable`); its rows stay in
the batch, so a later commit only makes 360dialog's redelivery a harmless duplicate.

With a spool (`fallback`), a batch PostgreSQL does not take within `flush_timeout_ms`
is appended to the local spool instead, and later batches go straight there until the
drainer reports PostgreSQL back. Without one, a lost connection is retried until the
deadline. Either way a request is answered 200 only once its batch is durable somewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.config import Config
from app.errors import NotDurable, Overloaded, StorageUnavailable, WabahookError
from app.records import IncomingRequest
from app.storage import StorageRejected

logger = logging.getLogger(__name__)

Write = Callable[[list[IncomingRequest]], Awaitable[None]]

_RETRY_FIRST_DELAY = 0.05  # seconds; doubles per failed attempt
_RETRY_MAX_DELAY = 1.0  # seconds


@dataclass(slots=True)
class _Pending:
    request: IncomingRequest
    future: asyncio.Future[None]
    arrived: float  # loop time


@dataclass(slots=True)
class _Batch:
    items: list[_Pending] = field(default_factory=list)
    rows: int = 0
    size: int = 0  # body bytes

    def add(self, item: _Pending) -> None:
        self.items.append(item)
        self.rows += item.request.rows
        self.size += len(item.request.body)


class GroupCommit:
    def __init__(self, config: Config, write: Write, fallback: Write | None = None) -> None:
        self._write = write
        self._fallback = fallback
        self._flush_timeout = config.flush_timeout_ms / 1000
        self.storage_down = False
        self._slots = config.flush_slots
        self._max_flushes = config.pool_size
        self._flush_after = config.flush_ms / 1000
        self._batch_rows = config.batch_rows
        self._batch_bytes = config.batch_bytes
        self._buffer_rows = config.buffer_rows
        self._buffer_bytes = config.buffer_bytes
        self._backpressure = config.backpressure_ms / 1000
        self._ack_deadline = config.ack_deadline_ms / 1000
        self._queue: deque[_Pending] = deque()
        self._rows = 0  # buffered rows: queued and being flushed
        self._bytes = 0
        self._flushes: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    @property
    def full(self) -> bool:
        return self._rows >= self._buffer_rows or self._bytes >= self._buffer_bytes

    def storage_recovered(self) -> None:
        """PostgreSQL took a write again: batches go to it, not to the spool."""
        if self.storage_down:
            logger.warning("PostgreSQL is back", extra={"action": "storage_up"})
        self.storage_down = False

    async def submit(self, request: IncomingRequest) -> None:
        """Return once the request's batch has committed; raise `Overloaded` or `NotDurable`."""
        if self._closed:
            raise Overloaded("shutting down")
        loop = asyncio.get_running_loop()
        if self.full:
            await self._wait_for_room(loop)
        pending = _Pending(request, loop.create_future(), loop.time())
        self._queue.append(pending)
        self._rows += request.rows
        self._bytes += len(request.body)
        if self.full:
            self._room.clear()
        self._schedule()
        # A plain timer on the future: cheaper per request than an asyncio.timeout scope.
        expiry = loop.call_at(pending.arrived + self._ack_deadline, _expire, pending.future)
        try:
            await pending.future
        finally:
            expiry.cancel()

    async def close(self, timeout: float) -> int:
        """Stop intake and flush everything buffered; return how many requests were left over."""
        self._closed = True
        self._schedule()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._flushes and loop.time() < deadline:
            await asyncio.wait(set(self._flushes), timeout=deadline - loop.time())
        left = [*self._queue]
        self._queue.clear()
        for task in self._flushes:
            task.cancel()
        for pending in left:
            if not pending.future.done():
                pending.future.set_exception(NotDurable("shut down before the batch committed"))
        if self._timer is not None:
            self._timer.cancel()
        return len(left)

    async def _wait_for_room(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = loop.time() + self._backpressure
        while self.full:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._room.wait()
            except TimeoutError:
                raise Overloaded from None

    def _schedule(self) -> None:
        """Start flushes for what is queued: into free slots, or late rows past the timer."""
        while self._queue and (len(self._flushes) < self._slots or self._closed):
            if len(self._flushes) >= self._max_flushes:
                return
            self._start_flush()
        if self._queue and self._timer is None and len(self._flushes) < self._max_flushes:
            due = self._queue[0].arrived + self._flush_after
            self._timer = asyncio.get_running_loop().call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._queue or len(self._flushes) >= self._max_flushes:
            return
        if asyncio.get_running_loop().time() >= self._queue[0].arrived + self._flush_after:
            self._start_flush()
        self._schedule()

    def _start_flush(self) -> None:
        batch = _Batch()
        queue = self._queue
        while queue and (
            not batch.items
            or (batch.rows + queue[0].request.rows <= self._batch_rows
                and batch.size < self._batch_bytes)
        ):  # fmt: skip
            batch.add(queue.popleft())
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._schedule()

    async def _flush(self, batch: _Batch) -> None:
        try:
            await self._store(batch)
        except Exception as exc:
            logger.error(
                "batch not stored: %s", exc,
                extra={"action": "batch_failed", "requests": len(batch.items)},
                exc_info=not isinstance(exc, WabahookError),
            )  # fmt: skip
            for pending in batch.items:
                if not pending.future.done():
                    pending.future.set_exception(NotDurable(str(exc) or None))
        else:
            for pending in batch.items:
                if not pending.future.done():
                    pending.future.set_result(None)
        finally:
            self._rows -= batch.rows
            self._bytes -= batch.size
            if not self.full:
                self._room.set()

    async def _store(self, batch: _Batch) -> None:
        requests = [pending.request for pending in batch.items]
        if self._fallback is None:
            await self._store_retrying(requests, batch.items[0].arrived + self._ack_deadline)
            return
        if not self.storage_down:
            try:
                async with asyncio.timeout(self._flush_timeout):
                    await self.write_isolating(requests)
                return
            except (StorageUnavailable, TimeoutError) as exc:
                self.storage_down = True
                logger.warning(
                    "PostgreSQL did not take a batch, spooling: %s", exc or "timed out",
                    extra={"action": "storage_down", "requests": len(requests)},
                )  # fmt: skip
        await self._fallback(requests)

    async def _store_retrying(self, requests: list[IncomingRequest], give_up_at: float) -> None:
        """Write the batch, retrying lost connections until the oldest request's deadline."""
        loop = asyncio.get_running_loop()
        delay = _RETRY_FIRST_DELAY
        while True:
            try:
                await self.write_isolating(requests)
                return
            except StorageUnavailable as exc:
                if loop.time() + delay >= give_up_at:
                    raise
                logger.warning(
                    "flush failed, retrying: %s", exc,
                    extra={"action": "flush_retry", "requests": len(requests), "delay_s": delay},
                )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_DELAY)

    async def write_isolating(self, requests: list[IncomingRequest]) -> None:
        """Write to PostgreSQL; a body it refuses is kept raw as quarantined, not lost."""
        try:
            await self._write(requests)
        except StorageRejected:
            await self._store_one_by_one(requests)

    async def _store_one_by_one(self, requests: list[IncomingRequest]) -> None:
        """Find the body PostgreSQL refuses, and keep that one raw, quarantined."""
        for request in requests:
            try:
                await self._write([request])
            except StorageRejected as exc:
                logger.error(
                    "body refused by PostgreSQL, quarantined: %s", exc,
                    extra={"action": "body_quarantined", "request_id": str(request.id)},
                )  # fmt: skip
                await self._write([request.quarantined()])


def _expire(future: asyncio.Future[None]) -> None:
    """The ack deadline passed: the request is answered 503; its rows stay in their batch."""
    if not future.done():
        future.set_exception(NotDurable())
