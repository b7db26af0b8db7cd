"""The copy buffer: requests wait here for the batch that makes them durable.

Many requests share one statement and one COMMIT. A flush starts as soon as a flush slot is
free, so a lone request is never held back for a timer; while every slot is busy the
buffer grows, and the next flush takes all of it (capped by rows and bytes). The timer
only bounds the wait: a row that has waited `flush_ms` with every slot busy gets an extra
flush of its own, on a spare pool connection. This is PostgreSQL's WAL-writer pattern.

The buffer is bounded: past `buffer_rows`/`buffer_bytes` new requests wait for room, and
past `backpressure_ms` they are refused (`Overloaded`, answered 503). A request that waits
longer than `ack_deadline_ms` for its batch is refused too (`NotDurable`); its rows stay in
the batch, so a later commit only makes 360dialog's redelivery a harmless duplicate.

This module only schedules. How a batch becomes durable (PostgreSQL, retries, the spool) is
the one `write` it is given: `BatchWriter.write` in `app/batch_writer.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.config import Config
from app.errors import NotDurable, Overloaded, WabahookError
from app.metrics import Metrics
from app.records import IncomingRequest

logger = logging.getLogger(__name__)

# Makes a batch durable, or raises; the float is the loop time by which it must be.
Write = Callable[[list[IncomingRequest], float], Awaitable[None]]


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


class CopyBuffer:
    """Batches requests from many connections and hands each batch to one `write`."""

    def __init__(self, config: Config, write: Write, metrics: Metrics) -> None:
        self._write = write
        self._metrics = metrics
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
    def rows(self) -> int:
        """Rows buffered: queued, and in flushes not done yet."""
        return self._rows

    @property
    def full(self) -> bool:
        return self._rows >= self._buffer_rows or self._bytes >= self._buffer_bytes

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
        while queue and (not batch.items or self._fits(batch, queue[0].request)):
            batch.add(queue.popleft())
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flush_done)

    def _fits(self, batch: _Batch, request: IncomingRequest) -> bool:
        return batch.rows + request.rows <= self._batch_rows and batch.size < self._batch_bytes

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._schedule()

    async def _flush(self, batch: _Batch) -> None:
        requests = [pending.request for pending in batch.items]
        try:
            await self._write(requests, batch.items[0].arrived + self._ack_deadline)
        except Exception as exc:
            self._metrics.inc("flush_failures_total")
            logger.error(
                "batch not stored: %s",
                exc,
                extra={"action": "batch_failed", "requests": len(batch.items)},
                exc_info=not isinstance(exc, WabahookError),
            )
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


def _expire(future: asyncio.Future[None]) -> None:
    """The ack deadline passed: the request is answered 503; its rows stay in their batch."""
    if not future.done():
        future.set_exception(NotDurable())
