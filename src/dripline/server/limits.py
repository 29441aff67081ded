"""What one client may hold of the server: connections, header size and time.

uvicorn bounds connections and requests at once (`limit_concurrency`: 503 above it) and
idle keep-alive time, but with httptools (its fast parser, which dripline uses) it puts
no limit on the size of a request's headers, nor on how long they take to arrive. The
protocol below adds both: headers over `server_max_header_bytes` are answered 431 and
the connection closed; headers still incomplete `server_header_timeout_s` after their
first byte close the connection (a slowloris client holds one socket for seconds, not
forever). Body reads are timed by `dripline.server.guard`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dripline.settings import Settings

__all__ = ["limited_protocol", "server_limits"]


def limited_protocol(max_header_bytes: int, header_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header size limit and a header timeout."""

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0  # bytes of the current request's head received so far
        _tail = b""  # the last bytes of the head so far: a terminator may span chunks
        _in_head = True
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_timer()  # a client that connects and sends nothing

        def _start_timer(self) -> None:
            if self._head_timer is None:
                loop = asyncio.get_running_loop()
                self._head_timer = loop.call_later(header_timeout_s, self._head_timeout)

        def data_received(self, data: bytes) -> None:
            if self._in_head and not self.transport.is_closing():
                # Measured before parsing: httptools would buffer any size.
                window = self._tail + data
                end = window.find(b"\r\n\r\n")
                seen = len(window) if end < 0 else end + 4
                if self._head_bytes - len(self._tail) + seen > max_header_bytes:
                    self._refuse(b"431 Request Header Fields Too Large")
                    return
                self._head_bytes += len(data)
                self._tail = window[-3:]
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                self._start_timer()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True  # what comes next on this connection is a new head

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_bytes, self._tail = 0, b""
            self._cancel_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            super().connection_lost(exc)

        def _cancel_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self._refuse(b"408 Request Timeout")

        def _refuse(self, status: bytes) -> None:
            self._cancel_timer()
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()

    return LimitedHttpToolsProtocol


def server_limits(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config options for the limits in `settings`."""
    return {
        "http": limited_protocol(
            settings.server_max_header_bytes, settings.server_header_timeout_s
        ),
        "limit_concurrency": settings.server_max_connections,
        "timeout_keep_alive": 5,
    }
