"""A minimal HTTP/1.1 load client for tests: many keep-alive connections, every answer recorded.

httpx's pool slows down sharply with thousands of queued requests; this client does only
what the load and fault tests need, and records the status of every body it sent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Results:
    statuses: dict[int, int] = field(default_factory=dict)  # body index -> status
    errors: dict[int, str] = field(default_factory=dict)  # body index -> connection error
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests

    def acknowledged(self) -> list[int]:
        return sorted(index for index, status in self.statuses.items() if status == 200)

    def latency_quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _connection(
    port: int, path: str, jobs: asyncio.Queue[tuple[int, bytes]], results: Results, timeout: float
) -> None:
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        while not jobs.empty():
            index, body = jobs.get_nowait()
            try:
                if streams is None:
                    streams = await asyncio.open_connection("127.0.0.1", port)
                status, close = await _exchange(*streams, path, body, results, timeout)
                results.statuses[index] = status
                if close:
                    streams[1].close()
                    streams = None
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                results.errors[index] = f"{type(exc).__name__}: {exc}"
                if streams is not None:
                    streams[1].close()
                streams = None
    finally:  # also when the load is cancelled
        if streams is not None:
            streams[1].close()
            await asyncio.shield(_closed(streams[1]))


async def _closed(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.wait_closed()
    except OSError:
        pass


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    path: str,
    body: bytes,
    results: Results,
    timeout: float,
) -> tuple[int, bool]:
    """One request and its response; returns the status and whether the server closes."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    started = time.perf_counter()
    writer.write(head.encode() + body)
    async with asyncio.timeout(timeout):
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"connection" and b"close" in value.lower():
                close = True
        await reader.readexactly(length)
    results.latencies.append(time.perf_counter() - started)
    return int(status_line.split()[1]), close


async def post_many(
    port: int,
    path: str,
    bodies: list[bytes],
    connections: int,
    timeout: float = 30.0,
    results: Results | None = None,
) -> Results:
    """POST every body once, over `connections` concurrent keep-alive connections.

    Pass `results` to watch the answers arrive while the load runs.
    """
    jobs: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for item in enumerate(bodies):
        jobs.put_nowait(item)
    results = Results() if results is None else results
    await asyncio.gather(
        *(_connection(port, path, jobs, results, timeout) for _ in range(connections))
    )
    return results
