"""The local spool on real files: order, limits, restarts, torn tails, release and locks."""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.spool import (
    HEADER_SIZE,
    MAGIC,
    SEGMENT_BYTES,
    Spool,
    SpoolBatch,
    SpooledRequest,
    SpoolFull,
    SpoolLocked,
    worker_spools,
)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

MakeSpool = Callable[..., Spool]


def request(n: int, body: bytes | None = None, channel: str = "acme-de") -> SpooledRequest:
    if body is None:
        body = b'{"object":"whatsapp_business_account","n":%d}' % n
    return SpooledRequest(uuid.UUID(int=n + 1), T0 + timedelta(microseconds=n), channel, body)


def batch(start: int, size: int = 3) -> list[SpooledRequest]:
    return [request(n) for n in range(start, start + size)]


def segment_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".spool"))


def disk_bytes(directory: Path) -> int:
    return sum((directory / name).stat().st_size for name in segment_files(directory))


def replay(spool: Spool) -> list[list[SpooledRequest]]:
    return [pending.requests for pending in spool.pending()]


def frame_size(tmp_path: Path, requests: list[SpooledRequest]) -> int:
    """What appending `requests` adds to a spool's size, measured on a scratch spool."""
    scratch = Spool(tmp_path / f"scratch-{uuid.uuid4().hex}", 1 << 30)
    scratch.open()
    try:
        scratch.append(requests)
        return scratch.size
    finally:
        scratch.close()


def skipped(caplog: pytest.LogCaptureFixture) -> list[tuple[object, object]]:
    return [
        (getattr(record, "segment", None), getattr(record, "offset", None))
        for record in caplog.records
        if getattr(record, "action", None) == "spool_record_skipped"
    ]


@pytest.fixture
def spools() -> Iterator[MakeSpool]:
    """Open spools, closed at the end of the test."""
    made: list[Spool] = []

    def make(
        directory: Path, max_bytes: int = 1 << 30, segment_bytes: int = SEGMENT_BYTES
    ) -> Spool:
        spool = Spool(directory, max_bytes, segment_bytes)
        spool.open()
        made.append(spool)
        return spool

    yield make
    for spool in made:
        spool.close()


def test_batches_come_back_in_order_across_segments(tmp_path: Path, spools: MakeSpool) -> None:
    spool = spools(tmp_path / "spool", segment_bytes=600)
    batches = [batch(10 * i, size=1 + i % 4) for i in range(12)]
    for requests in batches:
        spool.append(requests)

    pending = list(spool.pending())

    assert [p.requests for p in pending] == batches
    names = segment_files(spool.directory)
    assert len(names) > 1
    assert names == [f"{n:012d}.spool" for n in range(1, len(names) + 1)]
    assert [p.segment for p in pending] == sorted(p.segment for p in pending)
    assert pending[0].offset == 0
    for name in names:  # the roll keeps segments under segment_bytes (no frame is larger)
        assert (spool.directory / name).stat().st_size <= 600
    assert spool.size == disk_bytes(spool.directory)


def test_a_batch_that_fills_the_spool_exactly_fits(tmp_path: Path, spools: MakeSpool) -> None:
    requests = batch(0)
    frame = frame_size(tmp_path, requests)
    spool = spools(tmp_path / "spool", max_bytes=frame)

    spool.append(requests)

    assert spool.size == frame == spool.max_bytes == disk_bytes(spool.directory)
    before = (spool.directory / "000000000001.spool").read_bytes()
    with pytest.raises(SpoolFull):
        spool.append([request(99, body=b"")])
    assert spool.size == frame
    assert segment_files(spool.directory) == ["000000000001.spool"]
    assert (spool.directory / "000000000001.spool").read_bytes() == before
    assert replay(spool) == [requests]


def test_a_batch_one_byte_too_large_is_refused_and_nothing_written(
    tmp_path: Path, spools: MakeSpool
) -> None:
    requests = batch(0)
    frame = frame_size(tmp_path, requests)
    spool = spools(tmp_path / "spool", max_bytes=2 * frame - 1)
    spool.append(requests)

    with pytest.raises(SpoolFull, match="no room"):
        spool.append(requests)

    assert spool.size == frame == disk_bytes(spool.directory)
    assert replay(spool) == [requests]


def test_an_empty_spool_refuses_a_frame_larger_than_its_limit(
    tmp_path: Path, spools: MakeSpool
) -> None:
    requests = batch(0)
    spool = spools(tmp_path / "spool", max_bytes=frame_size(tmp_path, requests) - 1)

    with pytest.raises(SpoolFull):
        spool.append(requests)

    assert spool.size == 0
    assert segment_files(spool.directory) == []


def test_empty_batches_write_nothing_and_naive_times_are_refused(
    tmp_path: Path, spools: MakeSpool
) -> None:
    spool = spools(tmp_path / "spool")
    spool.append([])
    naive = SpooledRequest(uuid.uuid4(), datetime(2026, 3, 1, 9, 30), "acme-de", b"{}")
    with pytest.raises(ValueError, match="timezone-aware"):
        spool.append([request(1), naive])
    assert spool.size == 0
    assert segment_files(spool.directory) == []


def test_a_reopened_spool_yields_the_same_batches(tmp_path: Path, spools: MakeSpool) -> None:
    directory = tmp_path / "spool"
    first = spools(directory, segment_bytes=500)
    batches = [batch(10 * i) for i in range(6)]
    for requests in batches:
        first.append(requests)
    before = list(first.pending())
    names = segment_files(directory)
    first.close()

    second = spools(directory, segment_bytes=500)

    assert second.size == disk_bytes(directory) > 0
    assert list(second.pending()) == before
    second.append(batch(100))  # never into an old segment: it might end torn
    assert segment_files(directory) == [*names, f"{len(names) + 1:012d}.spool"]
    assert replay(second) == [*batches, batch(100)]
    assert second.size == disk_bytes(directory)


def _spool_of_three(tmp_path: Path) -> tuple[bytes, list[list[SpooledRequest]], int]:
    """A closed spool's single segment holding three batches, and the last frame's offset."""
    spool = Spool(tmp_path / "source", 1 << 30)
    spool.open()
    batches = [batch(0), batch(10, size=5), batch(20, size=4)]
    for requests in batches:
        spool.append(requests)
    last = list(spool.pending())[-1].offset
    spool.close()
    return (tmp_path / "source" / "000000000001.spool").read_bytes(), batches, last


def test_every_torn_tail_is_skipped_with_a_warning(
    tmp_path: Path, spools: MakeSpool, caplog: pytest.LogCaptureFixture
) -> None:
    data, batches, last = _spool_of_three(tmp_path)
    frame = len(data) - last
    for keep in range(frame):  # 0: a clean end; 1..frame-1: torn at every byte
        directory = tmp_path / f"torn-{keep}"
        directory.mkdir()
        (directory / "000000000001.spool").write_bytes(data[: last + keep])
        caplog.clear()
        spool = spools(directory)

        assert replay(spool) == batches[:2], keep
        assert skipped(caplog) == ([("000000000001.spool", last)] if keep else []), keep

        if keep not in (0, 1, HEADER_SIZE - 1, HEADER_SIZE, frame - 1):
            continue  # appending (two fsyncs) after a few of them is enough
        spool.append(batch(30))
        assert replay(spool) == [*batches[:2], batch(30)]
        assert segment_files(directory) == ["000000000001.spool", "000000000002.spool"]


def _rewrite(data: bytes, at: int, replacement: bytes) -> bytes:
    return data[:at] + replacement + data[at + len(replacement) :]


CORRUPTIONS: dict[str, Callable[[bytes, int], bytes]] = {
    "payload byte flipped": lambda data, at: _rewrite(
        data, len(data) - 3, bytes([data[len(data) - 3] ^ 0x40])
    ),
    "bad magic": lambda data, at: _rewrite(data, at, b"WHSQ"),
    "unknown version": lambda data, at: _rewrite(data, at + 4, b"\x02"),
    "length past the end": lambda data, at: _rewrite(data, at + 5, struct.pack("<I", 1 << 31)),
    "undecodable payload with a good CRC": lambda data, at: (
        data[:at]
        + MAGIC
        + struct.pack("<BII", 1, 4, zlib.crc32(b"\xc1\xc1\xc1\xc1"))
        + b"\xc1\xc1\xc1\xc1"
    ),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_corrupt_last_frame_is_skipped_with_a_warning(
    tmp_path: Path,
    spools: MakeSpool,
    caplog: pytest.LogCaptureFixture,
    corrupt: Callable[[bytes, int], bytes],
) -> None:
    data, batches, last = _spool_of_three(tmp_path)
    directory = tmp_path / "corrupt"
    directory.mkdir()
    (directory / "000000000001.spool").write_bytes(corrupt(data, last))
    spool = spools(directory)

    with caplog.at_level(logging.WARNING, logger="app.spool"):
        assert replay(spool) == batches[:2]

    assert skipped(caplog) == [("000000000001.spool", last)]
    spool.append(batch(30))
    assert replay(spool) == [*batches[:2], batch(30)]


def test_a_corrupt_segment_does_not_block_the_next(
    tmp_path: Path, spools: MakeSpool, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "spool"
    spool = spools(directory, segment_bytes=1)  # one batch per segment
    batches = [batch(10 * i) for i in range(3)]
    for requests in batches:
        spool.append(requests)
    spool.close()
    middle = directory / "000000000002.spool"
    middle.write_bytes(CORRUPTIONS["payload byte flipped"](middle.read_bytes(), 0))

    reopened = spools(directory, segment_bytes=1)
    pending = list(reopened.pending())

    assert [p.requests for p in pending] == [batches[0], batches[2]]
    assert skipped(caplog) == [("000000000002.spool", 0)]
    for p in pending:  # the corrupt segment has nothing left to replay: it goes too
        reopened.release(p)
    assert segment_files(directory) == []
    assert reopened.size == 0


def test_a_segment_is_deleted_once_all_its_batches_are_released(
    tmp_path: Path, spools: MakeSpool
) -> None:
    frame = frame_size(tmp_path, batch(10))
    spool = spools(tmp_path / "spool", segment_bytes=2 * frame)
    for i in range(1, 5):
        spool.append(batch(10 * i))  # same-sized frames: two per segment
    pending = list(spool.pending())
    assert [p.segment for p in pending] == ["000000000001.spool"] * 2 + ["000000000002.spool"] * 2

    spool.release(pending[1])  # out of order
    assert segment_files(spool.directory) == ["000000000001.spool", "000000000002.spool"]
    assert spool.size == 4 * frame
    assert list(spool.pending()) == [pending[0], pending[2], pending[3]]

    spool.release(pending[0])
    assert segment_files(spool.directory) == ["000000000002.spool"]
    assert spool.size == 2 * frame == disk_bytes(spool.directory)

    spool.release(pending[3])
    assert segment_files(spool.directory) == ["000000000002.spool"]
    spool.release(pending[2])
    spool.release(pending[2])  # twice is harmless
    assert segment_files(spool.directory) == []
    assert spool.size == 0
    assert list(spool.pending()) == []


def test_releasing_while_draining_deletes_each_segment(tmp_path: Path, spools: MakeSpool) -> None:
    spool = spools(tmp_path / "spool", segment_bytes=400)
    for i in range(8):
        spool.append(batch(10 * i))
    replayed = []

    for pending in spool.pending():  # what the drainer does
        replayed.append(pending.requests)
        spool.release(pending)

    assert replayed == [batch(10 * i) for i in range(8)]
    assert segment_files(spool.directory) == []
    assert spool.size == 0


def test_appends_while_draining_wait_for_the_next_pass(tmp_path: Path, spools: MakeSpool) -> None:
    spool = spools(tmp_path / "spool")
    first, second = batch(0), batch(10)
    spool.append(first)
    draining = spool.pending()

    assert next(draining).requests == first
    spool.append(second)  # past where this pass stops reading
    assert list(draining) == []
    assert replay(spool) == [first, second]


def test_a_drain_that_keeps_failing_adds_no_segments(tmp_path: Path, spools: MakeSpool) -> None:
    spool = spools(tmp_path / "spool")
    for i in range(5):
        spool.append(batch(10 * i))
        draining = spool.pending()
        assert next(draining).requests == batch(0)
        draining.close()  # PostgreSQL still away: the drainer gives up on this pass

    assert segment_files(spool.directory) == ["000000000001.spool"]


def test_a_reader_that_caught_up_seals_the_segment(tmp_path: Path, spools: MakeSpool) -> None:
    spool = spools(tmp_path / "spool")
    spool.append(batch(0))
    for pending in spool.pending():
        spool.release(pending)
    assert segment_files(spool.directory) == []  # sealed, so it could go

    spool.append(batch(10))
    assert segment_files(spool.directory) == ["000000000002.spool"]
    assert replay(spool) == [batch(10)]


def test_a_writer_and_a_drainer_in_two_threads_lose_and_repeat_nothing(
    tmp_path: Path, spools: MakeSpool
) -> None:
    spool = spools(tmp_path / "spool", segment_bytes=1000)
    written = [batch(10 * i, size=2) for i in range(150)]
    done = threading.Event()

    def write() -> None:
        for requests in written:
            spool.append(requests)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    replayed: list[list[SpooledRequest]] = []
    while True:
        finished = done.is_set()  # read before the pass: a pass after it sees everything
        for pending in spool.pending():
            replayed.append(pending.requests)
            spool.release(pending)
        if finished:
            break
    writer.join()

    assert replayed == written
    assert spool.size == 0
    assert segment_files(spool.directory) == []


def _holds(directory: Path) -> str:
    """Python code that holds `directory`'s spool lock until its stdin closes."""
    return (
        "import sys\nfrom pathlib import Path\nfrom app.spool import Spool\n"
        f"spool = Spool(Path({str(directory)!r}), 1)\nspool.open()\n"
        "print('locked', flush=True)\nsys.stdin.read()\n"
    )


def _try_open(directory: Path) -> int:
    """Exit status of another process opening the spool: 0 opened, 3 SpoolLocked."""
    code = (
        "import sys\nfrom pathlib import Path\nfrom app.spool import Spool, SpoolLocked\n"
        "try:\n    Spool(Path(sys.argv[1]), 1).open()\nexcept SpoolLocked:\n    sys.exit(3)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(directory)], cwd=REPO, timeout=60, check=False
    ).returncode


def test_a_spool_directory_is_locked_against_other_processes(
    tmp_path: Path, spools: MakeSpool
) -> None:
    spool = spools(tmp_path / "spool")
    spool.append(batch(0))

    assert _try_open(spool.directory) == 3
    with pytest.raises(SpoolLocked):  # flock is per open file, so this process too
        Spool(spool.directory, 1).open()
    assert (spool.directory / "lock").read_text() == f"{os.getpid()}\n"

    spool.close()
    assert _try_open(spool.directory) == 0
    assert replay(spools(spool.directory)) == [batch(0)]


def test_worker_spools_adopts_orphans_and_skips_live_workers(
    tmp_path: Path, spools: MakeSpool
) -> None:
    base = tmp_path / "spool"
    dead = Spool(base / "dead", 1 << 20)  # left by a worker that exited
    dead.open()
    dead.append(batch(0))
    dead.close()
    (base / "empty").mkdir()
    live = base / "live"

    with subprocess.Popen(
        [sys.executable, "-c", _holds(live)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "locked\n"

            mine, orphans = worker_spools(base, 1 << 20)
            try:
                assert mine.directory.parent == base
                assert len(mine.directory.name) == 32
                assert (mine.size, mine.max_bytes) == (0, 1 << 20)
                assert sorted(o.directory.name for o in orphans) == ["dead", "empty"]
                assert all(o.max_bytes == 0 for o in orphans)

                # A second worker in this process finds everything held.
                other, none = worker_spools(base, 1 << 20)
                assert none == []
                other.remove()

                by_name = {o.directory.name: o for o in orphans}
                drained = list(by_name["dead"].pending())
                assert [p.requests for p in drained] == [batch(0)]
                for pending in drained:
                    by_name["dead"].release(pending)
                assert all(o.remove() for o in orphans)
                assert sorted(os.listdir(base)) == sorted(["live", mine.directory.name])
            finally:
                for orphan in orphans:
                    orphan.close()
                mine.close()
        finally:
            os.kill(holder.pid, signal.SIGTERM)
            holder.wait(timeout=60)

    # Its holder is gone, so "live" is an orphan now; `mine` (closed, empty) is one too.
    again, orphans = worker_spools(base, 1 << 20)
    try:
        assert sorted(o.directory.name for o in orphans) == sorted(["live", mine.directory.name])
    finally:
        for orphan in orphans:
            orphan.remove()
        again.remove()
    assert os.listdir(base) == []


def test_every_acknowledged_batch_survives_kill_9(tmp_path: Path, spools: MakeSpool) -> None:
    directory = tmp_path / "spool"
    writer = (
        "import sys, uuid\nfrom datetime import UTC, datetime\nfrom pathlib import Path\n"
        "from app.spool import Spool, SpooledRequest\n"
        "spool = Spool(Path(sys.argv[1]), 1 << 30, 20_000)\nspool.open()\n"
        "for i in range(100_000):\n"
        "    t = datetime(2026, 3, 1, tzinfo=UTC)\n"
        "    spool.append([SpooledRequest(uuid.UUID(int=i + 1), t, 'acme-de', b'%d' % i)])\n"
        "    print(i, flush=True)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", writer, str(directory)], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            acknowledged = [int(child.stdout.readline()) for _ in range(200)]
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=60)

    spool = spools(directory)  # the dead writer's lock is free
    bodies = [int(pending.requests[0].body) for pending in spool.pending()]

    assert bodies[: len(acknowledged)] == acknowledged == list(range(200))
    assert bodies == list(range(len(bodies)))


def test_remove_keeps_a_directory_that_still_holds_segments(
    tmp_path: Path, spools: MakeSpool
) -> None:
    spool = spools(tmp_path / "spool")
    spool.append(batch(0))
    assert spool.remove() is False
    assert segment_files(spool.directory) == ["000000000001.spool"]

    reopened = spools(spool.directory)
    for pending in reopened.pending():
        reopened.release(pending)
    assert reopened.remove() is True
    assert not spool.directory.exists()


spooled_requests = st.builds(
    SpooledRequest,
    id=st.uuids(),
    received_at=st.datetimes(timezones=st.just(UTC)),
    channel=st.text(max_size=70),
    body=st.binary(max_size=3000),
)


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(spooled_requests, min_size=1, max_size=6), min_size=1, max_size=6),
    segment_bytes=st.integers(min_value=1, max_value=20_000),
)
def test_random_batches_round_trip_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[SpooledRequest]],
    segment_bytes: int,
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(directory, 1 << 30, segment_bytes)
    spool.open()
    try:
        for requests in batches:
            spool.append(requests)
        assert replay(spool) == batches
    finally:
        spool.close()
    reopened = Spool(directory, 1 << 30, segment_bytes)
    reopened.open()
    try:
        pending: list[SpoolBatch] = list(reopened.pending())
        assert [p.requests for p in pending] == batches
        assert reopened.size == disk_bytes(directory)
    finally:
        reopened.close()
