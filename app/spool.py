"""The local spool: a write-ahead log on local disk for batches PostgreSQL did not take.

While PostgreSQL is unreachable the flush path appends each whole batch here, and its requests
are answered 200 only once the batch is fsync'd: one write and one fsync per batch, never one
per request. That is the same group commit as the PostgreSQL path, done on a file, so a spooled
batch costs about one disk flush however many requests it carries. A drainer later replays the
batches into PostgreSQL, oldest first, and deletes a segment file only after every batch in it
has committed.

On disk, one directory per worker process::

    <dir>/lock                 flock'd while a process owns the spool (it holds that pid)
    <dir>/000000000001.spool   segments, numbered in the order they were started
    <dir>/000000000002.spool

A segment is a sequence of frames, one per batch, integers unsigned little-endian::

    offset  size  field
    0       4     magic b"WHSP"
    4       1     format version, 1
    5       4     payload length n
    9       4     CRC-32 of the payload
    13      n     payload: msgpack array of SpooledRequest arrays [id, received_at, channel, body]

Frames are only appended (O_APPEND, one write, then fsync), and a segment is never appended to
again once a write to it failed, once a reader has read all of it, or after the spool is
reopened. So a crash can tear only the last frame of a segment, and that frame was never
acknowledged. A reader of the segment still being appended to stops at its last fsync'd frame.
A frame that is short, has a bad magic or version, fails its CRC or does not decode ends its
segment for the reader, with a warning, and the drain goes on with the next segment.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import threading
import uuid
import zlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import msgspec

from app.errors import WabahookError

logger = logging.getLogger(__name__)

MAGIC = b"WHSP"
VERSION = 1
_HEADER = struct.Struct("<4sBII")  # magic, version, payload length, CRC-32 of the payload
HEADER_SIZE = _HEADER.size  # 13 bytes
_MAX_PAYLOAD = 0xFFFF_FFFF  # the length field is a u32
SEGMENT_BYTES = 64 * 1024 * 1024  # a segment is closed once the next frame would pass this
LOCK_NAME = "lock"
_SEGMENT_NAME = re.compile(r"\d{12}\.spool")
_MAKE_ATTEMPTS = 5  # fresh directories tried before worker_spools gives up


class SpoolError(WabahookError):
    """The local spool failed."""


class SpoolFull(SpoolError):
    """The spool has no room for this batch."""


class SpoolLocked(SpoolError):
    """Another process holds this spool directory."""


class SpoolWriteFailed(SpoolError):
    """The batch could not be written and fsync'd to the spool."""


class SpooledRequest(msgspec.Struct, array_like=True):
    """What an acknowledged request needs to be rebuilt: normalising its body gives the rest."""

    id: uuid.UUID
    received_at: datetime  # timezone-aware; msgpack keeps it as a UTC timestamp
    channel: str
    body: bytes


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """One spooled batch as `Spool.pending()` yields it; `release()` it once it committed."""

    segment: str
    offset: int  # of its frame in the segment
    requests: list[SpooledRequest]


_ENCODER = msgspec.msgpack.Encoder(uuid_format="bytes")
_DECODER = msgspec.msgpack.Decoder(list[SpooledRequest])


@dataclass(slots=True)
class _Segment:
    name: str
    size: int  # bytes on disk, torn tail included
    frames: set[int] | None = None  # offsets of its complete frames, once read to the end
    released: set[int] = field(default_factory=set)  # offsets of frames replayed


class _Unreadable(Exception):
    """A frame that cannot be replayed; its message says why."""


class Spool:
    """One worker process's spool directory: numbered segment files of framed batches.

    Calls block on disk I/O; run them in a thread. One thread appends while another drains
    (`pending` then `release`); a lock keeps their shared state consistent.
    """

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._dir_fd: int | None = None
        self._segments: dict[str, _Segment] = {}  # oldest first
        self._active: _Segment | None = None  # the segment appends go to
        self._active_fd: int | None = None
        self._next_number = 1
        self._size = 0

    @property
    def size(self) -> int:
        """Bytes of all segment files on disk."""
        return self._size

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def segments(self) -> int:
        """Segment files on disk: those being replayed, and the one being appended to."""
        return len(self._segments)

    def open(self) -> None:
        """Create the directory, lock it against other processes and find its segments."""
        with self._lock:
            if self._lock_fd is not None:
                raise RuntimeError(f"spool {self.directory} is already open")
            _make_dirs(self.directory)
            self._lock_fd = _take_lock(self.directory / LOCK_NAME)
            try:
                self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                self._scan()
            except BaseException:
                self._close_fds()
                raise
        logger.debug(
            "spool %s opened: %d segments, %d bytes",
            self.directory,
            len(self._segments),
            self._size,
            extra={"action": "spool_opened", "directory": str(self.directory)},
        )

    def close(self) -> None:
        """Close the open segment and release the directory lock."""
        with self._lock:
            self._close_fds()

    def remove(self) -> bool:
        """Close, and delete the directory if it holds no segment; return whether it did."""
        with self._lock:
            if self._lock_fd is None:
                return False
            try:
                if any(_SEGMENT_NAME.fullmatch(name) for name in os.listdir(self.directory)):
                    return False
                # Unlinked while still held: whoever opens "lock" from now on gets a new file,
                # which _take_lock notices, rather than a lock on a file nobody else can see.
                os.unlink(self.directory / LOCK_NAME)
                try:
                    os.rmdir(self.directory)
                except OSError:  # another process created its lock meanwhile, or a stray file
                    return False
                return True
            finally:
                self._close_fds()

    def append(self, batch: Sequence[SpooledRequest]) -> None:
        """Write the batch as one frame and fsync it: once this returns, it survives a crash.

        Raise `SpoolFull` (nothing written) if the frame does not fit under `max_bytes`, and
        `SpoolWriteFailed` if the disk refused it (the batch may or may not be replayed).
        """
        if not batch:
            return
        for request in batch:
            # msgpack writes a naive datetime as a string; it would not decode as received_at.
            if request.received_at.utcoffset() is None:
                raise ValueError("received_at must be timezone-aware")
        frame = _frame(batch)
        with self._lock:
            if self._size + len(frame) > self._max_bytes:
                raise SpoolFull(
                    f"the spool has no room for a batch of {len(frame)} bytes "
                    f"({self._size} of {self._max_bytes} bytes used)"
                )
            segment, fd, created = self._writable(len(frame))
            before = segment.size
            try:
                _write_all(fd, frame)
                os.fsync(fd)
                if created:
                    # The new file's directory entry must be as durable as its first frame.
                    os.fsync(self._open_fds()[1])
            except OSError as exc:
                # A partial frame ends its segment for readers: never write behind it.
                try:
                    segment.size = os.fstat(fd).st_size
                except OSError:
                    segment.size = before + len(frame)
                self._size += segment.size - before
                self._seal()
                raise SpoolWriteFailed(f"spool write to {segment.name} failed: {exc}") from exc
            segment.size += len(frame)
            self._size += len(frame)

    def pending(self) -> Generator[SpoolBatch, None, None]:
        """Every batch not yet released, oldest segment first, frames in file order.

        The segment being appended to is read up to its last fsync'd frame; batches appended
        after that wait for the next call. A reader that catches up with the writer seals the
        segment (the next append starts a new one) so it can be deleted once released. A drain
        that keeps failing on the oldest batch seals nothing, so it cannot multiply segments.
        """
        with self._lock:
            self._open_fds()
            segments = list(self._segments.values())
        for segment in segments:
            yield from self._read(segment)

    def release(self, batch: SpoolBatch) -> None:
        """Mark a batch replayed; a segment is deleted once all its batches are released.

        Released batches of a segment still on disk come back after a restart: replay is
        idempotent, so that costs time, not correctness.
        """
        with self._lock:
            segment = self._segments.get(batch.segment)
            if segment is None:  # already deleted
                return
            segment.released.add(batch.offset)
            self._delete_if_done(segment)

    def _scan(self) -> None:
        names = sorted(name for name in os.listdir(self.directory) if _SEGMENT_NAME.fullmatch(name))
        self._segments = {
            name: _Segment(name, os.stat(self.directory / name).st_size) for name in names
        }
        self._size = sum(segment.size for segment in self._segments.values())
        # Never append to a segment from before: it may end in a torn frame.
        self._next_number = int(names[-1].removesuffix(".spool")) + 1 if names else 1
        self._active = None

    def _open_fds(self) -> tuple[int, int]:
        if self._lock_fd is None or self._dir_fd is None:
            raise RuntimeError(f"spool {self.directory} is not open")
        return self._lock_fd, self._dir_fd

    def _close_fds(self) -> None:
        self._seal()
        for fd in (self._dir_fd, self._lock_fd):  # closing the lock file releases the flock
            if fd is not None:
                os.close(fd)
        self._dir_fd = self._lock_fd = None
        self._segments = {}
        self._size = 0

    def _writable(self, length: int) -> tuple[_Segment, int, bool]:
        """The segment the next frame goes to, its fd, and whether it was just created."""
        self._open_fds()
        active, fd = self._active, self._active_fd
        if active is not None and fd is not None:
            if active.size == 0 or active.size + length <= self._segment_bytes:
                return active, fd, False
        self._seal()
        name = f"{self._next_number:012d}.spool"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self.directory / name, flags, 0o644)
        self._next_number += 1
        segment = _Segment(name, 0)
        self._segments[name] = segment
        self._active, self._active_fd = segment, fd
        return segment, fd, True

    def _seal(self) -> None:
        """Stop appending to the active segment; the next append starts a new one."""
        if self._active_fd is not None:
            # Every frame in it was fsync'd by its append; a failing close changes nothing.
            with contextlib.suppress(OSError):
                os.close(self._active_fd)
        self._active = self._active_fd = None

    def _read(self, segment: _Segment) -> Iterator[SpoolBatch]:
        path = self.directory / segment.name
        with self._lock:
            # Appends hold the lock through write and fsync: up to here every frame is whole.
            end = segment.size
        try:
            file = open(path, "rb")  # closed by the with below, across yields
        except FileNotFoundError:
            self._forget(segment)
            return
        frames: set[int] = set()
        torn = False
        with file:
            offset = 0
            while offset < end:
                replay = offset not in segment.released
                try:
                    length, requests = _read_frame(file, end - offset, decode=replay)
                except _Unreadable as exc:
                    logger.warning(
                        "spool record skipped: %s at offset %d of %s, %d bytes not replayed",
                        exc,
                        offset,
                        path,
                        end - offset,
                        extra={
                            "action": "spool_record_skipped",
                            "segment": segment.name,
                            "offset": offset,
                        },
                    )
                    torn = True
                    break
                frames.add(offset)
                if requests is not None:
                    yield SpoolBatch(segment.name, offset, requests)
                offset += HEADER_SIZE + length
        with self._lock:
            if segment.size != end and not torn:
                return  # appended to (perhaps then rolled) meanwhile: the next pass reads on
            if segment is self._active:
                self._seal()  # caught up: it can be deleted once its batches are released
            segment.frames = frames
            self._delete_if_done(segment)

    def _forget(self, segment: _Segment) -> None:
        """A segment file that is gone: released and deleted since the snapshot, or by hand."""
        with self._lock:
            if self._segments.get(segment.name) is not segment:
                return
            self._untrack(segment)
        logger.warning(
            "spool segment %s vanished, its batches were not replayed",
            segment.name,
            extra={"action": "spool_segment_missing", "segment": segment.name},
        )

    def _untrack(self, segment: _Segment) -> None:
        """Drop segment from the index (lock held): `_size` counts exactly the indexed segments."""
        del self._segments[segment.name]
        self._size -= segment.size

    def _delete_if_done(self, segment: _Segment) -> None:
        """Delete a fully read segment whose batches were all released (lock held)."""
        if segment.frames is None or not segment.frames <= segment.released:
            return
        if self._segments.get(segment.name) is not segment or segment is self._active:
            return
        _, dir_fd = self._open_fds()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / segment.name)
        os.fsync(dir_fd)
        self._untrack(segment)
        logger.debug(
            "spool segment %s replayed and deleted",
            segment.name,
            extra={"action": "spool_segment_deleted", "segment": segment.name},
        )


def worker_spools(
    base: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES
) -> tuple[Spool, list[Spool]]:
    """This process's new spool under `base`, and every spool there no live process holds.

    Several worker processes share `base`. Each appends only to a directory of its own, and
    adopts, to drain them, the directories whose lock is free: left by a worker that died or
    by a previous run. Orphans get `max_bytes` 0, since nothing is ever appended to them.
    """
    _make_dirs(base)
    opened: list[Spool] = []
    try:
        for _ in range(_MAKE_ATTEMPTS):
            mine = Spool(base / uuid.uuid4().hex, max_bytes, segment_bytes)
            try:
                mine.open()
            except SpoolLocked:  # another worker's scan took it between mkdir and lock
                continue
            opened.append(mine)
            break
        else:
            raise SpoolLocked(f"no spool directory of its own could be locked under {base}")
        orphans: list[Spool] = []
        for path in sorted(base.iterdir()):
            if path == mine.directory or path.name.startswith(".") or not path.is_dir():
                continue
            orphan = Spool(path, 0, segment_bytes)
            try:
                orphan.open()
            except SpoolLocked:  # a live worker's own
                continue
            opened.append(orphan)
            orphans.append(orphan)
            if orphan.size:
                logger.info(
                    "draining the spool %s left by another process: %d bytes",
                    path,
                    orphan.size,
                    extra={"action": "spool_adopted", "directory": str(path), "bytes": orphan.size},
                )
    except BaseException:
        for spool in opened:
            spool.close()
        raise
    return mine, orphans


def _frame(batch: Sequence[SpooledRequest]) -> bytearray:
    frame = bytearray(HEADER_SIZE)
    _ENCODER.encode_into(list(batch), frame, HEADER_SIZE)
    length = len(frame) - HEADER_SIZE
    if length > _MAX_PAYLOAD:
        raise SpoolFull(f"a batch of {length} bytes is larger than one spool frame can hold")
    with memoryview(frame) as view:
        crc = zlib.crc32(view[HEADER_SIZE:])
    _HEADER.pack_into(frame, 0, MAGIC, VERSION, length, crc)
    return frame


def _read_frame(
    file: BinaryIO, available: int, decode: bool
) -> tuple[int, list[SpooledRequest] | None]:
    """Payload length and requests of the frame at the file's position (None if not decoded)."""
    header = file.read(HEADER_SIZE)
    if len(header) < HEADER_SIZE:
        raise _Unreadable("short header")
    magic, version, length, crc = _HEADER.unpack(header)
    if magic != MAGIC:
        raise _Unreadable("bad magic")
    if version != VERSION:
        raise _Unreadable(f"unknown format version {version}")
    if length > available - HEADER_SIZE:  # checked before reading: the length may be garbage
        raise _Unreadable("short payload")
    if not decode:  # released on an earlier pass, when it was checked
        file.seek(length, os.SEEK_CUR)
        return length, None
    payload = file.read(length)
    if len(payload) < length:
        raise _Unreadable("short payload")
    if zlib.crc32(payload) != crc:
        raise _Unreadable("CRC mismatch")
    try:
        return length, _DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise _Unreadable(f"undecodable payload ({exc})") from None


def _write_all(fd: int, data: bytearray) -> None:
    # One write in practice; a short one (disk full) continues so an error surfaces, not a gap.
    with memoryview(data) as view:
        while view:
            view = view[os.write(fd, view) :]


def _make_dirs(path: Path) -> None:
    """mkdir -p that fsyncs each parent it adds an entry to: a lost entry loses its segments."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _take_lock(path: Path) -> int:
    """Open and flock the lock file without waiting; raise `SpoolLocked` if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpoolLocked(f"spool {path.parent} is held by another process") from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        held = os.fstat(fd)
        if current is None or (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
            raise SpoolLocked(f"spool {path.parent} is being removed by another process")
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)  # for whoever wonders which process holds it
    except BaseException:
        os.close(fd)
        raise
    return fd
