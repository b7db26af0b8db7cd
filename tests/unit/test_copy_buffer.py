"""The copy buffer's scheduling: batch caps, immediate flushes, the late-row timer and
backpressure. The write is a recording function: storage is not what is tested here (the
integration tests run the same path against PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from app.config import Config
from app.copy_buffer import CopyBuffer
from app.errors import NotDurable, Overloaded, StorageUnavailable
from app.metrics import Metrics
from app.records import IncomingRequest, incoming
from tests.corpus import cloud_text

pytestmark = pytest.mark.anyio


def _requests(count: int) -> list[IncomingRequest]:
    now = datetime.now(UTC)
    return [incoming(cloud_text(f"wamid.g{i}"), "c", received_at=now) for i in range(count)]


class Recorder:
    """A write that records each batch and can be held until released."""

    def __init__(self) -> None:
        self.batches: list[list[IncomingRequest]] = []
        self.deadlines: list[float] = []
        self.release = asyncio.Event()
        self.release.set()
        self.called = asyncio.Event()

    async def __call__(self, batch: list[IncomingRequest], give_up_at: float) -> None:
        self.batches.append(batch)
        self.deadlines.append(give_up_at)
        self.called.set()
        await self.release.wait()


async def test_batches_are_capped_at_batch_rows() -> None:
    recorder = Recorder()
    recorder.release.clear()
    # Each request is 2 rows (itself and one event): 10 rows is 5 requests exactly.
    buffer = CopyBuffer(Config(batch_rows=10, flush_slots=1, pool_size=1), recorder, Metrics())
    submits = [asyncio.create_task(buffer.submit(r)) for r in _requests(13)]
    await recorder.called.wait()  # the first request went alone: the slot was free
    recorder.release.set()
    await asyncio.gather(*submits)
    assert [len(batch) for batch in recorder.batches] == [1, 5, 5, 2]


async def test_a_lone_request_does_not_wait_for_the_timer() -> None:
    recorder = Recorder()
    buffer = CopyBuffer(Config(flush_ms=60_000.0), recorder, Metrics())
    async with asyncio.timeout(5):  # far below the 60 s timer
        await buffer.submit(_requests(1)[0])
    assert len(recorder.batches) == 1


async def test_late_rows_get_a_flush_of_their_own() -> None:
    recorder = Recorder()
    recorder.release.clear()
    buffer = CopyBuffer(Config(flush_slots=1, pool_size=2, flush_ms=50.0), recorder, Metrics())
    first, second = _requests(2)
    first_done = asyncio.create_task(buffer.submit(first))
    await recorder.called.wait()
    recorder.called.clear()
    second_done = asyncio.create_task(buffer.submit(second))
    # The only slot is held; after flush_ms the waiting row gets the spare connection.
    async with asyncio.timeout(5):
        await recorder.called.wait()
    assert [batch[0].id for batch in recorder.batches] == [first.id, second.id]
    recorder.release.set()
    await asyncio.gather(first_done, second_done)


async def test_no_late_flush_beyond_the_pool() -> None:
    recorder = Recorder()
    recorder.release.clear()
    config = Config(flush_slots=1, pool_size=1, flush_ms=10.0, ack_deadline_ms=300.0)
    buffer = CopyBuffer(config, recorder, Metrics())
    first, second = _requests(2)
    first_done = asyncio.create_task(buffer.submit(first))
    await recorder.called.wait()
    with pytest.raises(NotDurable):
        await buffer.submit(second)  # held behind the one connection past its deadline
    assert len(recorder.batches) == 1
    recorder.release.set()
    with pytest.raises(NotDurable):
        await first_done  # held as long, so past its deadline too


@pytest.mark.parametrize(("admitted", "buffer_rows"), [(3, 6), (3, 5)])
async def test_backpressure_at_the_buffer_limit(admitted: int, buffer_rows: int) -> None:
    recorder = Recorder()
    recorder.release.clear()
    config = Config(buffer_rows=buffer_rows, backpressure_ms=100.0, flush_slots=1, pool_size=1)
    buffer = CopyBuffer(config, recorder, Metrics())
    requests = _requests(admitted + 1)
    held = [asyncio.create_task(buffer.submit(r)) for r in requests[:admitted]]
    await recorder.called.wait()
    assert buffer.full  # 3 requests of 2 rows reach either limit
    with pytest.raises(Overloaded):
        await buffer.submit(requests[admitted])  # one past the limit: refused after 100 ms
    recorder.release.set()
    await asyncio.gather(*held)
    assert not buffer.full
    await buffer.submit(requests[admitted])  # room again


async def test_close_flushes_what_is_buffered() -> None:
    recorder = Recorder()
    buffer = CopyBuffer(Config(), recorder, Metrics())
    submits = [asyncio.create_task(buffer.submit(r)) for r in _requests(20)]
    await recorder.called.wait()  # the first flush runs after every submit has enqueued
    assert await buffer.close(timeout=5) == 0
    await asyncio.gather(*submits)
    assert sum(len(batch) for batch in recorder.batches) == 20
    with pytest.raises(Overloaded):
        await buffer.submit(_requests(1)[0])


async def test_the_write_gets_the_oldest_requests_deadline() -> None:
    recorder = Recorder()
    buffer = CopyBuffer(Config(ack_deadline_ms=2000.0), recorder, Metrics())
    loop = asyncio.get_running_loop()
    before = loop.time()
    await buffer.submit(_requests(1)[0])
    after = loop.time()
    assert before + 2.0 <= recorder.deadlines[0] <= after + 2.0


async def test_a_failed_write_answers_every_request_of_its_batch_not_durable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(batch: list[IncomingRequest], give_up_at: float) -> None:
        raise StorageUnavailable("gone")

    buffer = CopyBuffer(Config(), failing, Metrics())
    results = await asyncio.gather(
        *(buffer.submit(r) for r in _requests(3)), return_exceptions=True
    )
    assert all(isinstance(result, NotDurable) for result in results)
    assert [r.action for r in caplog.records] == ["batch_failed"] * len(caplog.records)
    assert caplog.records
