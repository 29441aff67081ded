"""The builtin HTTP/1.1 transport against real servers on loopback: the HTTP details the
fake does not exercise (chunked bodies, keep-alive, closes, timeouts, TLS)."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme
from aiohttp import web

from dripline.errors import TransportError, WhatsAppError
from dripline.whatsapp.answered import ON_ANSWER
from dripline.whatsapp.client import AiohttpTransport
from dripline.whatsapp.http1 import Http1Transport
from dripline.whatsapp.proxy import ProxyConfig
from tests.fixtures.http_servers import raw_server, scripted_server, serving_tcp

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(
    handler: Handler, *, ssl_context: ssl.SSLContext | None = None, keepalive_s: float = 75.0
) -> AsyncIterator[tuple[str, list[str]]]:
    """An aiohttp server on a free port; yields its base URL and the peers it saw."""
    peers: list[str] = []

    async def wrapped(request: web.Request) -> web.StreamResponse:
        peers.append(str(request.transport.get_extra_info("peername") if request.transport else ""))
        return await handler(request)

    app = web.Application()
    app.router.add_post("/{tail:.*}", wrapped)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive_s)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}/v23.0/1/messages", peers
    finally:
        await runner.cleanup()


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nRetry-After: 9\r\n\r\n"
FINAL = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"final":1}'
)


@pytest.mark.parametrize(
    "parts",
    [
        (CONTINUE, FINAL),  # the 100 arrives on its own, the answer later
        (CONTINUE + FINAL,),  # both in one segment
        (CONTINUE, EARLY_HINTS, FINAL),
    ],
    ids=["100-then-200", "100+200-together", "100-103-200"],
)
async def test_interim_1xx_answers_are_skipped(parts: tuple[bytes, ...]) -> None:
    """RFC 9110 section 15.2: a client must accept 1xx answers before the final one and
    read on. Taking a 100 as the answer made the send look failed, and it was resent."""
    transport = Http1Transport(access_token="tok")
    async with scripted_server(*parts) as url:
        for _ in range(2):  # the connection stays usable after the interim answers
            # The 103's Retry-After belongs to the 103, not to the final answer.
            assert await transport(url, b"{}") == (200, b'{"final":1}', None)
        assert len(transport._all) == 1
    await transport.close()


async def test_101_switching_protocols_is_a_maybe_sent_protocol_error() -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    transport = Http1Transport(access_token="tok")
    async with scripted_server(switch, FINAL) as url:
        with pytest.raises(TransportError, match="101") as info:
            await transport(url, b"{}")
    await transport.close()
    assert info.value.maybe_sent is True


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["Content-Type"] == "application/json"
    return web.Response(body=b'{"echo":' + body + b"}", content_type="application/json")


async def test_keep_alive_reuses_one_connection() -> None:
    transport = Http1Transport(access_token="tok")
    async with serving(echo) as (url, peers):
        for i in range(20):
            status, body, retry_after = await transport(url, b"%d" % i)
            assert (status, body, retry_after) == (200, b'{"echo":%d}' % i, None)
    await transport.close()
    assert len(peers) == 20 and len(set(peers)) == 1


async def test_concurrent_requests_each_get_their_own_answer() -> None:
    transport = Http1Transport(access_token="tok")
    async with serving(echo) as (url, peers):
        answers = await asyncio.gather(*(transport(url, b"%d" % i) for i in range(50)))
        again = await asyncio.gather(*(transport(url, b"%d" % i) for i in range(50)))
    await transport.close()
    assert [a[1] for a in answers + again] == [b'{"echo":%d}' % (i % 50) for i in range(100)]
    assert len(set(peers)) <= 50  # the second round reused the first round's connections


async def test_the_answer_hook_runs_with_the_status_before_the_caller_resumes() -> None:
    """`answered.py`: the send path frees its concurrency slot from this hook, so it
    must run once per final answer (not for a 1xx), before the awaiting call resumes."""
    seen: list[tuple[int, bool]] = []
    resumed = False

    def hook(status: int) -> None:
        seen.append((status, resumed))

    transport = Http1Transport(access_token="tok")
    token = ON_ANSWER.set(hook)
    try:
        async with serving(echo) as (url, _):
            assert (await transport(url, b"1"))[0] == 200
            resumed = True
        assert seen == [(200, False)]
        resumed = False
        async with scripted_server(CONTINUE, EARLY_HINTS, FINAL) as url:
            assert (await transport(url, b"{}"))[0] == 200
            resumed = True
        assert seen == [(200, False), (200, False)]
        truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"
        async with raw_server(truncated, close=True) as url:
            with pytest.raises(TransportError):
                await transport(url, b"{}")
        assert len(seen) == 2  # no answer, no hook
    finally:
        ON_ANSWER.reset(token)
        await transport.close()


async def test_chunked_body_and_retry_after() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=429, headers={"Retry-After": "7"})
        resp.enable_chunked_encoding()
        resp.content_type = "application/json"
        await resp.prepare(request)
        for part in (b'{"error":', b'{"code":130429}', b"}"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    transport = Http1Transport(access_token="tok")
    async with serving(chunked) as (url, _):
        assert await transport(url, b"{}") == (429, b'{"error":{"code":130429}}', "7")
        assert (await transport(url, b"{}"))[0] == 429  # still usable afterwards
    await transport.close()


async def test_connection_close_is_honoured() -> None:
    async def closing(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="{}", headers={"Connection": "close"})

    transport = Http1Transport(access_token="tok")
    async with serving(closing) as (url, peers):
        for _ in range(3):
            assert (await transport(url, b"{}"))[0] == 200
    await transport.close()
    assert len(set(peers)) == 3


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    transport = Http1Transport(access_token="tok")
    async with serving(echo, keepalive_s=0.1) as (url, peers):
        assert (await transport(url, b"1"))[0] == 200
        await asyncio.sleep(0.5)  # the server closes the idle connection meanwhile
        assert (await transport(url, b"2"))[0] == 200
    await transport.close()
    assert len(set(peers)) == 2


async def test_idle_connections_older_than_keepalive_are_replaced() -> None:
    transport = Http1Transport(access_token="tok", keepalive_s=0.05)
    async with serving(echo) as (url, peers):
        assert (await transport(url, b"1"))[0] == 200
        await asyncio.sleep(0.2)
        assert (await transport(url, b"2"))[0] == 200
    await transport.close()
    assert len(set(peers)) == 2


async def test_no_answer_in_time_is_a_maybe_sent_timeout_and_the_next_call_works() -> None:
    calls = 0

    async def slow_once(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(5)
        return web.Response(text="{}")

    transport = Http1Transport(access_token="tok", read_timeout_s=0.2)
    async with serving(slow_once) as (url, _):
        with pytest.raises(TransportError, match="read timeout") as info:
            await transport(url, b"{}")
        assert info.value.maybe_sent is True
        assert (await transport(url, b"{}"))[0] == 200
    await transport.close()


async def test_each_request_times_out_on_its_own_deadline_across_reused_connections() -> None:
    """The read timeouts share one timer (`Http1Transport._expire`): a connection reused
    for a later request is timed on that request's deadline, not its first one's, and
    a request that hangs among answered ones is timed out alone."""

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query["wait"]))
        return web.Response(text="{}")

    transport = Http1Transport(access_token="tok", read_timeout_s=0.4)
    async with serving(handler) as (url, peers):
        assert (await transport(url + "?wait=0", b"{}"))[0] == 200
        await asyncio.sleep(0.2)
        hang = asyncio.ensure_future(transport(url + "?wait=1.5", b"{}"))
        # The first connection again, answered after its first request's deadline.
        assert (await transport(url + "?wait=0.3", b"{}"))[0] == 200
        with pytest.raises(TransportError, match=r"read timeout after 0\.4s") as info:
            await hang
        assert info.value.maybe_sent is True
        assert (await transport(url + "?wait=0", b"{}"))[0] == 200
    assert len(set(peers)) == 2  # the answered connection was reused
    await transport.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}",  # ends at close
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",  # cut short
        b"SMTP ready\r\n",  # not HTTP
    ],
)
async def test_broken_answers_are_maybe_sent_errors(reply: bytes) -> None:
    transport = Http1Transport(access_token="tok")
    async with raw_server(reply, close=True) as url:
        with pytest.raises(TransportError) as info:
            await transport(url, b"{}")
    await transport.close()
    assert info.value.maybe_sent is True


async def test_refused_connection_is_not_sent() -> None:
    async with raw_server(b"", close=True) as url:
        pass  # closed: nobody listens on that port any more
    transport = Http1Transport(access_token="tok", connect_timeout_s=2)
    with pytest.raises(TransportError, match="cannot connect") as info:
        await transport(url, b"{}")
    assert info.value.maybe_sent is False


async def test_cancelled_call_drops_its_connection() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text='{"late":true}')

    transport = Http1Transport(access_token="tok")
    async with serving(slow) as (url, peers):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await transport(url, b"{}")
        # The late answer must not be read as the next call's answer.
        assert await transport(url, b"{}") == (200, b'{"late":true}', None)
    await transport.close()
    assert len(set(peers)) == 2


async def test_https_verifies_the_certificate() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with serving(echo, ssl_context=server_ctx) as (url, _):
        trusted = Http1Transport(access_token="tok", ssl_context=client_ctx)
        assert await trusted(url, b"1") == (200, b'{"echo":1}', None)
        await trusted.close()
        # The system store does not know the test CA: refused before anything is sent.
        system = Http1Transport(access_token="tok")
        with pytest.raises(TransportError, match="certificate") as info:
            await system(url, b"1")
        assert info.value.maybe_sent is False
        await system.close()


# -- the CONNECT handshake with a scripted proxy (tinyproxy covers the happy path) -------


@asynccontextmanager
async def connect_proxy(answer: bytes | None) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A proxy that reads one CONNECT request head, then sends `answer` and closes
    (None: stays silent). Yields its URL (with credentials) and the heads it read."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        if answer is None:
            await asyncio.sleep(30)
        writer.write(answer or b"")
        await writer.drain()
        writer.close()

    async with serving_tcp(handle) as port:
        yield f"http://ana:pr0xy-secret@127.0.0.1:{port}", heads


TARGET = "https://graph.example:443/v23.0/1/messages"


@pytest.mark.parametrize("stack", ["builtin", "aiohttp"])
async def test_the_connect_request_carries_proxy_credentials_and_never_the_token(
    stack: str,
) -> None:
    """aiohttp copies a session's default headers into CONNECT and turns `Authorization`
    into `Proxy-Authorization`: the access token would reach the proxy in clear."""
    answer = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    async with connect_proxy(answer) as (proxy_url, heads):
        proxy = ProxyConfig.from_strings(proxy_url, None)
        transport = (
            Http1Transport(access_token="SECRET-TOKEN", proxy=proxy)
            if stack == "builtin"
            else AiohttpTransport(access_token="SECRET-TOKEN", proxy=proxy)
        )
        with pytest.raises(WhatsAppError) as info:
            await transport(TARGET, b"{}")
        await transport.close()
    assert (info.value.error_class, info.value.http_status) == ("auth", 407)
    head = heads[0].decode()
    assert head.startswith("CONNECT graph.example:443 HTTP/1.1\r\n")
    expected = base64.b64encode(b"ana:pr0xy-secret").decode()
    assert f"Proxy-Authorization: Basic {expected}\r\n" in head
    assert "SECRET-TOKEN" not in head and "Bearer" not in head
    assert "pr0xy-secret" not in str(info.value) and expected not in str(info.value)


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"", "closed before answering CONNECT"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP"),
        (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", "HTTP 502 Bad Gateway"),
        (b"HTTP/1.1 200 Connection established\r\n\r\nEXTRA", "sent data into the tunnel"),
        (None, "connect timeout after 0.3s through the proxy"),
    ],
)
async def test_a_failed_tunnel_is_not_sent(answer: bytes | None, match: str) -> None:
    async with connect_proxy(answer) as (proxy_url, _):
        transport = Http1Transport(
            access_token="tok",
            connect_timeout_s=0.3,
            proxy=ProxyConfig.from_strings(proxy_url, None),
        )
        with pytest.raises(TransportError, match=match) as info:
            await transport(TARGET, b"{}")
        await transport.close()
    assert info.value.maybe_sent is False
    assert "pr0xy-secret" not in str(info.value)


async def test_get_reads_on_the_same_connections() -> None:
    """The throughput tier's GET goes through the builtin transport (loading aiohttp for
    it was a fifth of `run --once`'s start-up): a GET head without a body, and the
    keep-alive connection serves the POSTs after it."""
    heads: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        heads.append(f"{request.method} {request.path_qs} {request.headers.get('Authorization')}")
        assert request.headers.get("Content-Length") in (None, "2")
        return web.Response(text='{"throughput":{"level":"HIGH"}}', headers={"Retry-After": "7"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/v23.0/1"
    transport = Http1Transport(access_token="tok")
    try:
        answer = await transport.get(f"{base}?fields=throughput")
        assert answer == (200, b'{"throughput":{"level":"HIGH"}}', "7")
        assert (await transport(f"{base}/messages", b"{}"))[0] == 200
        assert len(transport._all) == 1
    finally:
        await transport.close()
        await runner.cleanup()
    assert heads == [
        "GET /v23.0/1?fields=throughput Bearer tok",
        "POST /v23.0/1/messages Bearer tok",
    ]


async def test_a_get_that_fails_after_writing_is_not_maybe_sent() -> None:
    """A read changes nothing: its lost answer is a plain error, never `maybe_sent`."""
    transport = Http1Transport(access_token="tok", read_timeout_s=0.2)
    async with raw_server(b"", close=False) as url:
        with pytest.raises(TransportError, match=r"GET /x failed: read timeout") as info:
            await transport.get(url)
    await transport.close()
    assert info.value.maybe_sent is False


def test_sends_on_uvloop_keep_alive_concurrent_and_tls() -> None:
    """`dripline run` runs on uvloop where it is installed (dripline.eventloop). uvloop's
    transports are not `asyncio.Transport` subclasses: an isinstance assert in
    `connection_made` failed inside the loop's callback, the connection kept no
    transport, and every send failed."""
    import uvloop  # a dev dependency: this test must run, never skip

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main() -> list[bytes]:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        bodies = []
        for context in (None, server_ctx):
            transport = Http1Transport(access_token="tok", ssl_context=client_ctx)
            async with serving(echo, ssl_context=context) as (url, peers):
                for i in range(3):
                    bodies.append((await transport(url, b"%d" % i))[1])
                answers = await asyncio.gather(*(transport(url, b"%d" % i) for i in range(5)))
                bodies += [a[1] for a in answers]
            await transport.close()
            assert len(peers) == 8 and len(set(peers)) <= 5  # the first connection reused
        return bodies

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        bodies = runner.run(main())
    assert bodies == [b'{"echo":%d}' % i for i in (0, 1, 2, 0, 1, 2, 3, 4)] * 2
