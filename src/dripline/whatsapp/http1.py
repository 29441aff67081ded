"""A lean HTTP/1.1 transport for the send path: keep-alive connections on asyncio
protocols, responses parsed by httptools (llhttp, the parser uvicorn uses).

Why not aiohttp here: the dispatcher makes one POST per message, up to the API's 1,000
per second, and that call is its largest CPU cost. Measured at 150 concurrent POSTs
against the fake Cloud API, one core each (`python -m dripline.fake.loadgen --mode
client`, then with `--http-client aiohttp`): aiohttp's ClientSession costs about 0.21 ms
of CPU per request, this transport about 0.07 ms. aiohttp stays everywhere else (the
fake, webhook delivery, tests) and as `AiohttpTransport`, selected with
`DRIPLINE_WHATSAPP_HTTP_CLIENT=aiohttp`.

What it does: POSTs, and the rare GET (the number's throughput tier, read at start:
loading aiohttp for that one read cost `dripline run --once` a fifth of its start-up),
http and https (TLS verified against the system's CA store),
Content-Length and chunked responses, interim 1xx responses skipped (RFC 9110 section
15.2; a 101 is a protocol error here, nothing asks to switch), keep-alive (idle
connections are reused newest first and dropped after `keepalive_s`, before a server
would close them under a request), `Connection: close` honoured, a connect timeout and
a response timeout, and an HTTPS proxy (`proxy.py`): a CONNECT tunnel with TLS to the
Cloud API inside it, `Proxy-Authorization` from the proxy URL's credentials.
What it does not: redirects, compression, responses delimited only by the connection
closing (the Graph API always sends a length), proxies for plain http targets. One
request at a time per connection, never pipelined.

Errors follow the client's contract (see `client.py`): a failure before the request
was written is `TransportError(maybe_sent=False)` (that includes everything a proxy
answers to CONNECT); after it, `maybe_sent=True`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from dripline import __version__
from dripline.errors import InputError, TransportError, WhatsAppError
from dripline.whatsapp.answered import ON_ANSWER
from dripline.whatsapp.proxy import Proxy, ProxyConfig

__all__ = ["Http1Transport", "RawResponse"]

# (HTTP status, body bytes, Retry-After header or None)
RawResponse = tuple[int, bytes, str | None]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_PROXY_HEAD = 16_384  # a CONNECT answer is a status line and a few headers
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?")


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries at most one request at a time."""

    def __init__(self, release: Callable[[_Connection], None]) -> None:
        self._release = release
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[RawResponse] | None = None
        self._on_answer: Callable[[int], None] | None = None
        # Loop time by which the response must be in (`Http1Transport` checks it).
        self.deadline = 0.0
        self._body: list[bytes] = []
        self._retry_after: str | None = None
        self.origin: _Origin | None = None
        self.closed = False
        self.idle_since = 0.0

    # asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports (`dripline run`'s default loop) are
        # not asyncio.Transport subclasses, and a failed assert here, swallowed by the
        # loop's exception handler, left every send without a transport.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"unreadable HTTP response ({exc})")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = type(exc).__name__ if exc is not None else "closed by the server"
        self._fail(f"connection lost before the response ({reason})")

    # httptools callbacks -----------------------------------------------------
    def on_message_begin(self) -> None:
        self._body = []
        self._retry_after = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1").strip()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            if status == 101:
                self._fail("the server switched protocols (HTTP 101) after the request")
            # 100 Continue, 103 Early Hints: interim answers; the final one follows.
            return
        waiter, self._waiter = self._waiter, None
        on_answer, self._on_answer = self._on_answer, None
        if waiter is None or waiter.done():
            self.close()  # an answer nobody asked for: the connection is out of step
            return
        if on_answer is not None:
            on_answer(status)  # before the caller resumes (answered.py)
        waiter.set_result((status, b"".join(self._body), self._retry_after))
        self._body = []
        if self._parser.should_keep_alive() and not self.closed:
            self._release(self)
        else:
            self.close()

    # requests ----------------------------------------------------------------
    @property
    def waiting(self) -> bool:
        """A request is out and its response not yet in."""
        return self._waiter is not None

    def request(self, data: bytes, deadline: float) -> asyncio.Future[RawResponse]:
        """Write one request; the future resolves with its response. The caller times
        it out at `deadline` (`time_out`)."""
        assert self._transport is not None and self._waiter is None
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self._on_answer = ON_ANSWER.get()
        self.deadline = deadline
        self._transport.write(data)
        return waiter

    def time_out(self, timeout_s: float) -> None:
        self._fail(f"read timeout after {timeout_s}s; the message may have been sent")

    def _fail(self, why: str) -> None:
        waiter, self._waiter = self._waiter, None
        self._on_answer = None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(TransportError(why, maybe_sent=True))

    def close(self) -> None:
        self.closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class _TunnelHandshake(asyncio.Protocol):
    """Collects a proxy's answer to CONNECT; TLS takes the connection over after a 2xx."""

    def __init__(self, answered: asyncio.Future[tuple[bytes, bool]]) -> None:
        self._answered = answered
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if self._answered.done():
            return
        if end >= 0:
            # (the head, whether bytes followed it: a tunnel must stay silent until TLS)
            self._answered.set_result((bytes(self._buffer[:end]), len(self._buffer) > end + 4))
        elif len(self._buffer) > _MAX_PROXY_HEAD:
            self._answered.set_exception(ConnectionError("answer to CONNECT too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._answered.done():
            self._answered.set_exception(ConnectionError("closed before answering CONNECT"))


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Http1Transport:
    """POSTs JSON (and GETs) with keep-alive pooling; a drop-in `Transport` for
    `CloudApiClient`.

    There is no cap on connections: concurrency is the dispatcher's job, and a cap here
    would queue requests invisibly behind the limit it already enforces. `proxy` says
    which https targets go through a CONNECT proxy (default: none; `CloudApiClient`
    passes the one from settings, that is `HTTPS_PROXY` / `NO_PROXY`).
    """

    def __init__(
        self,
        *,
        access_token: str,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
        keepalive_s: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
        proxy: ProxyConfig | None = None,
    ) -> None:
        self._token = access_token
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._keepalive_s = keepalive_s
        self._proxy = proxy or ProxyConfig()
        self._targets: dict[str, tuple[_Origin, bytes, Proxy | None]] = {}
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        # Connections by their last request's start, oldest first (so by deadline: the
        # timeout is the same for all), and the one timer that times out the oldest.
        # A timer per request cost a heap push and a cancelled entry per message.
        self._out: dict[_Connection, None] = {}
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_loop: asyncio.AbstractEventLoop | None = None
        # None: the system's CA store, made on the first https connection.
        self._ssl = ssl_context

    def __repr__(self) -> str:
        return f"Http1Transport(connections={len(self._all)}, proxy={self._proxy.https})"

    def _target(self, url: str) -> tuple[_Origin, bytes, Proxy | None]:
        """The origin, the request head up to the Content-Length value and the proxy, per URL."""
        cached = self._targets.get(url)
        if cached is not None:
            return cached
        origin, head, proxy = self._route(url, "POST")
        head += b"Content-Type: application/json\r\nContent-Length: "
        target = (origin, head, proxy)
        self._targets[url] = target
        return target

    def _route(self, url: str, method: str) -> tuple[_Origin, bytes, Proxy | None]:
        """The origin, the head's request line and common headers, and the proxy."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise InputError(f"not an http(s) URL: {url!r}", where="whatsapp_base_url")
        port = parts.port or _DEFAULT_PORTS[scheme]
        origin = _Origin(scheme, parts.hostname, port)
        host = _authority(parts.hostname, port)
        if port == _DEFAULT_PORTS[scheme]:
            host = host.rsplit(":", 1)[0]  # the default port is left out of Host
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = (
            f"{method} {path} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"User-Agent: dripline/{__version__}\r\n"
            f"Authorization: Bearer {self._token}\r\n"
        ).encode("latin-1")
        return origin, head, self._proxy.for_target(scheme, origin.host, port)

    def _release(self, conn: _Connection) -> None:
        assert conn.origin is not None
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.origin, []).append(conn)

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        stale_before = asyncio.get_running_loop().time() - self._keepalive_s
        while idle:
            conn = idle.pop()  # newest first: the oldest age out and are dropped
            if not conn.closed and conn.idle_since >= stale_before:
                return conn
            self._forget(conn)
        return None

    def _forget(self, conn: _Connection) -> None:
        conn.close()
        self._all.discard(conn)

    async def _connect(self, origin: _Origin, proxy: Proxy | None) -> _Connection:
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        via = f" through the proxy at {proxy.display}" if proxy is not None else ""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if proxy is None:
                    conn = await self._open_direct(origin, context)
                else:
                    assert context is not None  # only https targets are proxied
                    conn = await self._open_tunnel(origin, proxy, context)
        except TimeoutError:
            raise TransportError(
                f"connect timeout after {self._connect_timeout_s}s{via}", maybe_sent=False
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(
                f"cannot connect to the Cloud API at {origin.host}:{origin.port}{via}: {exc}",
                maybe_sent=False,
            ) from None
        conn.origin = origin
        self._all.add(conn)
        return conn

    async def _open_direct(self, origin: _Origin, context: ssl.SSLContext | None) -> _Connection:
        _, conn = await asyncio.get_running_loop().create_connection(
            lambda: _Connection(self._release),
            origin.host,
            origin.port,
            ssl=context,
            server_hostname=origin.host if context is not None else None,
        )
        return conn

    async def _open_tunnel(
        self, origin: _Origin, proxy: Proxy, context: ssl.SSLContext
    ) -> _Connection:
        """CONNECT through `proxy`, then TLS with the Cloud API inside the tunnel."""
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[tuple[bytes, bool]] = loop.create_future()
        raw, _ = await loop.create_connection(
            lambda: _TunnelHandshake(answered), proxy.host, proxy.port
        )
        try:
            authority = _authority(origin.host, origin.port)
            request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            request += f"User-Agent: dripline/{__version__}\r\n"
            if proxy.authorization is not None:
                request += f"Proxy-Authorization: {proxy.authorization}\r\n"
            raw.write(f"{request}\r\n".encode("latin-1"))
            try:
                head, trailing = await answered
            except ConnectionError as exc:
                raise TransportError(
                    f"the proxy at {proxy.display} {exc}", maybe_sent=False
                ) from None
            _check_tunnel(head, trailing, proxy, authority)
            conn = _Connection(self._release)
            tls = await loop.start_tls(raw, conn, context, server_hostname=origin.host)
            if tls is None:  # the proxy closed the tunnel during the handshake
                raise ConnectionError("the tunnel closed during the TLS handshake")
        except BaseException:
            raw.close()
            raise
        conn.connection_made(tls)
        return conn

    async def __call__(self, url: str, body: bytes) -> RawResponse:
        origin, head, proxy = self._target(url)
        return await self._exchange(origin, proxy, b"%b%d\r\n\r\n%b" % (head, len(body), body))

    async def get(self, url: str) -> RawResponse:
        """A GET on the same connections (the phone number node's fields). Read-only, so
        a lost answer is simply an error: nothing may have been sent."""
        origin, head, proxy = self._route(url, "GET")
        try:
            return await self._exchange(origin, proxy, head + b"\r\n")
        except TransportError as exc:
            if not exc.maybe_sent:
                raise
            why = str(exc).split(";", 1)[0]  # a read timeout's note is about messages
            raise TransportError(
                f"GET {urlsplit(url).path} failed: {why}", maybe_sent=False
            ) from None

    async def _exchange(self, origin: _Origin, proxy: Proxy | None, data: bytes) -> RawResponse:
        """One request on an idle or new connection; its response."""
        conn = self._take_idle(origin) or await self._connect(origin, proxy)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._read_timeout_s
        waiter = conn.request(data, deadline)
        out = self._out
        out.pop(conn, None)  # to the end: the newest request
        out[conn] = None
        if self._expiry is None or self._expiry_loop is not loop:  # (a test's new loop)
            self._expiry, self._expiry_loop = loop.call_at(deadline, self._expire), loop
        try:
            return await waiter
        except TransportError:
            self._all.discard(conn)
            raise
        except asyncio.CancelledError:
            # Abandoned mid-request: the connection's next bytes would be this answer.
            self._forget(conn)
            raise

    def _expire(self) -> None:
        """Time out every request past its deadline; wake again at the next deadline.
        Connections whose request is done are dropped from `_out` here, lazily."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        out = self._out
        while out:
            conn = next(iter(out))
            if conn.waiting:
                if conn.deadline > now + 1e-3:  # (a timer may run a little early)
                    self._expiry = loop.call_at(conn.deadline, self._expire)
                    return
                conn.time_out(self._read_timeout_s)
            del out[conn]

    async def close(self) -> None:
        """Close every connection."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._out.clear()
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
        # Let the transports run their connection_lost callbacks before the loop ends.
        await asyncio.sleep(0)


def _check_tunnel(head: bytes, trailing: bool, proxy: Proxy, authority: str) -> None:
    """Raise unless the proxy's answer to CONNECT opened the tunnel (any 2xx, RFC 9110
    section 9.3.6). Nothing has reached the Cloud API yet, so nothing here is maybe-sent;
    a 407 means the credentials in the proxy URL are missing or wrong: an operator's
    problem that retrying cannot fix, so it stops sending like a rejected token. A 401
    gets the same treatment: only the proxy can have sent it (tinyproxy 1.11 does)."""
    match = _STATUS_LINE.match(head.split(b"\r\n", 1)[0])
    if match is None:
        raise TransportError(
            f"the proxy at {proxy.display} answered CONNECT with something that is not HTTP",
            maybe_sent=False,
        )
    status = int(match.group(1))
    reason = (match.group(2) or b"").decode("latin-1")[:80]
    if status in (401, 407):
        hint = "wrong user or password" if proxy.username is not None else "none are set"
        raise WhatsAppError(
            f"the proxy at {proxy.display} wants credentials (HTTP {status} {reason}): {hint}; "
            "put them in HTTPS_PROXY as http://user:password@host:port",
            code=None,
            error_class="auth",
            http_status=status,
        )
    if not 200 <= status < 300:
        raise TransportError(
            f"the proxy at {proxy.display} did not open a tunnel to {authority}: "
            f"HTTP {status} {reason}",
            maybe_sent=False,
        )
    if trailing:
        raise TransportError(
            f"the proxy at {proxy.display} sent data into the tunnel before TLS started",
            maybe_sent=False,
        )
