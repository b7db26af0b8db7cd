"""The HTTP/1.1 connection: uvicorn's httptools protocol, with the limits it lacks.

httptools buffers a request head without bound, and uvicorn has no timeout for it: one
endless header grows the process by hundreds of MiB, and connections that send nothing, or
drip their headers, are held until the descriptor table is full. Per connection, this adds:

- a head timeout: a request head not complete `header_timeout_s` after the connection
  opened, or after the request's first byte, closes the connection (408 when part of a
  head had arrived);
- a head size cap: a request target and headers (names and values) of more than
  `max_header_bytes` get 431 and the connection is closed;
- a header count cap: more than `max_headers` header lines get 431 and close;
- upgrades refused: httptools stops reading a request at `Connection: Upgrade`, so a POST
  carrying `Upgrade: h2c` (what `curl --http2` sends to an http:// URL) would reach the app
  with an empty body; it gets 400 and close instead, so no 200 ever covers unread bytes.

httptools hands over a header only once it is complete, so an endless one is seen only as
bytes read: a head still incomplete after twice the cap in raw bytes (framing included) is
cut the same way, whatever it holds.

Two costs of the request path go too. uvicorn writes a response's head and its body with two
`write` calls, two system calls and two packets: `_OneWriteTransport` holds the head until the
body follows and sends both at once. And the head timeout is one timer per connection, moved
lazily, rather than one timer armed and cancelled per request.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_STATUS = {
    400: b"400 Bad Request",
    408: b"408 Request Timeout",
    431: b"431 Request Header Fields Too Large",
}


@dataclass(frozen=True, slots=True)
class HeadLimits:
    header_timeout_s: float  # seconds
    max_header_bytes: int  # bytes of request target and header names and values
    max_headers: int  # header lines


class _OneWriteTransport:
    """The connection's transport, but a response head waits for the body that follows it.

    A head is what uvicorn writes alone at `http.response.start`: it ends the head and carries
    no body. The next write (the body, even an empty one) or a close sends it. Anything else
    (100 Continue, a whole response written at once) goes out as it is written.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif (
            data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n") and (data[9:12] != b"100")
        ):
            self._head = data
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            data, self._head = self._head, None
            self._transport.write(data)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads; built by `protocol_factory`."""

    def __init__(self, *args: Any, limits: HeadLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._in_head = True  # a connection starts waiting for a head
        self._head_size = 0  # request target and header names and values, bytes
        self._head_read = 0  # raw bytes read while the current head was incomplete
        self._headers_seen = 0
        self._messages = 0  # requests begun on this connection
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline = 0.0  # loop time by which the current head must be complete
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _OneWriteTransport(transport)  # type: ignore[assignment]
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered and closing: the rest is not read
        messages = self._messages
        super().data_received(data)
        if self._refused or not self._in_head:
            return
        # Only a read that began and ended inside one head counts whole; the first read of a
        # head also carries what came before it, so it is left out.
        if self._messages == messages:
            self._head_read += len(data)
        if self._head_size > self._limits.max_header_bytes or (
            self._head_read > 2 * self._limits.max_header_bytes
        ):
            self._refuse_large_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._messages += 1
        self._in_head = True
        self._head_size = 0
        self._head_read = 0
        self._headers_seen = 0
        if self._messages > 1:  # the first head's time counts from the connection's start
            self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers_seen += 1
        self._head_size += len(name) + len(value)
        if self._headers_seen <= self._limits.max_headers:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False  # the timer, if it fires, finds nothing to time out
        if self._head_size > self._limits.max_header_bytes:
            self._refuse_large_head()
        elif self._headers_seen > self._limits.max_headers:
            self._refuse(431, b"more than %d header lines\n" % self._limits.max_headers)
        elif self.parser.should_upgrade() and not self._should_upgrade():
            self._refuse(400, b"protocol upgrades are not supported: send HTTP/1.1 as is\n")
        else:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _unsupported_upgrade_warning(self) -> None:
        """Refused in `on_headers_complete` already: nothing to log per request."""

    def _start_head_timer(self) -> None:
        """The current head must be complete within the timeout: a timer already armed for
        an earlier deadline moves itself on when it fires."""
        loop = asyncio.get_running_loop()
        self._head_deadline = loop.time() + self._limits.header_timeout_s
        if self._head_timer is None:
            self._head_timer = loop.call_at(self._head_deadline, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self._refused:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._head_deadline:  # a later head: its own deadline
            self._head_timer = loop.call_at(self._head_deadline, self._head_timed_out)
            return
        if self._messages == 0:
            # Not a byte of a request arrived: close as an idle keep-alive connection is.
            self._refused = True
            self.transport.close()
            return
        self._refuse(408, b"request head not received in time\n")

    def _refuse_large_head(self) -> None:
        self._refuse(431, b"request head larger than %d bytes\n" % self._limits.max_header_bytes)

    def _refuse(self, status: int, text: bytes) -> None:
        """Answer and close, before any app sees the request."""
        self._refused = True
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (_STATUS[status], len(text), text)
        )
        self.transport.close()


def protocol_factory(limits: HeadLimits) -> Any:
    """What uvicorn's `http=` takes: it calls this with its own arguments per connection."""
    return functools.partial(LimitedHttpToolsProtocol, limits=limits)
