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
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while not jobs.empty():
        index, body = jobs.get_nowait()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
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
            results.statuses[index] = int(status_line.split()[1])
            results.latencies.append(time.perf_counter() - started)
            if close:
                writer.close()
                writer = None
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            results.errors[index] = f"{type(exc).__name__}: {exc}"
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


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
