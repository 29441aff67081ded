"""Both HTTP stacks against independent real servers: Debian's nginx over TLS (a trustme
CA) and tinyproxy as the CONNECT proxy. The project's own servers (aiohttp, the fake)
share assumptions with the client; these do not.

Covered: keep-alive reuse (nginx's `$connection` / `$connection_requests` come back in
the answer), idle close by the server (`keepalive_timeout`), the `keepalive_requests`
limit, `Connection: close` answers, chunked answers, a slow answer read whole
(`limit_rate`), no answer (a read timeout, maybe sent), nginx's bare 502 / 504 after it
passed the request to its upstream (maybe sent: the upstream did read it), TLS verified
against the CA (and refused without it, or for another name), and the proxy: CONNECT
with Basic auth, a 407 for wrong or missing credentials, NO_PROXY, a tunnel to nowhere.

1xx answers are not here: nginx 1.22 sends a 100 Continue only to a client that asked
with `Expect: 100-continue` (neither stack does) and never passes an upstream's 1xx on,
so interim answers are covered by raw-socket servers in `test_http1_transport.py` and
`test_whatsapp_client_fake.py`.

Without nginx or tinyproxy these skip locally and FAIL in CI (see tests/fixtures/nginx.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from dripline.errors import TransportError, WhatsAppError
from dripline.whatsapp.client import AiohttpTransport, CloudApiClient, HttpClient, RawResponse
from dripline.whatsapp.http1 import Http1Transport
from dripline.whatsapp.proxy import ProxyConfig
from tests.fixtures.nginx import (
    Nginx,
    RecordingUpstream,
    Tinyproxy,
    Tls,
    free_port,
    start_nginx,
    stop_nginx,
)

pytestmark = pytest.mark.nginx

PATH = "/v23.0/1/messages"
# nginx fills in which connection (a serial number) and which request on it answered.
CONN_ANSWER = (
    'return 200 \'{"messaging_product":"whatsapp",'
    '"messages":[{"id":"wamid.$connection.$connection_requests"}]}\';'
)
SLOW_BODY = json.dumps({"messages": [{"id": "wamid.SLOW"}], "pad": "x" * 3000})


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nginx(
    tmp_path_factory: pytest.TempPathFactory, tls: Tls, upstream: RecordingUpstream
) -> Iterator[Nginx]:
    cert = f"ssl_certificate {tls.cert}; ssl_certificate_key {tls.key};"
    listen = "listen 127.0.0.1:{port} ssl;"
    servers = {
        "main": f"""{listen} {cert}
            keepalive_timeout 60s;
            location {PATH} {{ {CONN_ANSWER} }}
            location /chunked/ {{
                # sub_filter rewrites the body, so nginx cannot send a length: chunked.
                sub_filter_types application/json;
                sub_filter_once off;
                sub_filter 'SPLIT' '"}},{{"id":"wamid.2';
                return 200 '{{"messages":[{{"id":"wamid.1SPLIT"}}]}}';
            }}
            location /limited/ {{
                limit_rate 1k;
                return 200 '{SLOW_BODY}';
            }}
            location /upstream/ {{
                proxy_pass http://127.0.0.1:{upstream.port};
                proxy_http_version 1.1;
                proxy_buffering off;
                proxy_read_timeout 1s;
            }}""",
        "idle": f"""{listen} {cert}
            keepalive_timeout 1s;
            location {PATH} {{ {CONN_ANSWER} }}""",
        "limited": f"""{listen} {cert}
            keepalive_requests 3;
            location {PATH} {{ {CONN_ANSWER} }}""",
        "close": f"""{listen} {cert}
            keepalive_timeout 0;
            location {PATH} {{ {CONN_ANSWER} }}""",
        "other_name": f"""{listen}
            ssl_certificate {tls.other_cert}; ssl_certificate_key {tls.other_key};
            location {PATH} {{ {CONN_ANSWER} }}""",
    }
    server = start_nginx(tmp_path_factory.mktemp("nginx"), servers)
    yield server
    stop_nginx(server)


def url(nginx: Nginx, name: str, path: str = PATH) -> str:
    return f"https://127.0.0.1:{nginx.ports[name]}{path}"


@pytest.fixture(params=["builtin", "aiohttp"])
def stack(request: pytest.FixtureRequest) -> HttpClient:
    value: HttpClient = request.param
    return value


@asynccontextmanager
async def transport_for(
    stack: HttpClient,
    tls: Tls | None,
    *,
    read_timeout_s: float = 10.0,
    proxy: ProxyConfig | None = None,
) -> AsyncIterator[Http1Transport | AiohttpTransport]:
    """One of the two stacks, trusting the test CA (or, with tls=None, the system store)."""
    context = tls.client_context() if tls is not None else None
    transport: Http1Transport | AiohttpTransport
    if stack == "builtin":
        transport = Http1Transport(
            access_token="tok", read_timeout_s=read_timeout_s, ssl_context=context, proxy=proxy
        )
    else:
        transport = AiohttpTransport(
            access_token="tok", read_timeout_s=read_timeout_s, ssl_context=context, proxy=proxy
        )
    try:
        yield transport
    finally:
        await transport.close()


def served_by(answer: RawResponse) -> tuple[int, int]:
    """(nginx's connection serial, the request's number on that connection)."""
    status, body, _ = answer
    assert status == 200, body
    wamid = json.loads(body)["messages"][0]["id"]
    serial, number = wamid.removeprefix("wamid.").split(".")
    return int(serial), int(number)


async def test_keep_alive_reuses_one_connection(nginx: Nginx, tls: Tls, stack: HttpClient) -> None:
    async with transport_for(stack, tls) as transport:
        served = [served_by(await transport(url(nginx, "main"), b"{}")) for _ in range(5)]
    assert len({serial for serial, _ in served}) == 1
    assert [number for _, number in served] == [1, 2, 3, 4, 5]


async def test_a_connection_the_server_closed_when_idle_is_replaced(
    nginx: Nginx, tls: Tls, stack: HttpClient
) -> None:
    async with transport_for(stack, tls) as transport:
        first = served_by(await transport(url(nginx, "idle"), b"{}"))
        await asyncio.sleep(1.5)  # past nginx's keepalive_timeout of 1 s: it closed
        second = served_by(await transport(url(nginx, "idle"), b"{}"))
    assert first[0] != second[0]
    assert first[1] == second[1] == 1


async def test_the_keepalive_requests_limit_closes_and_the_next_request_reconnects(
    nginx: Nginx, tls: Tls, stack: HttpClient
) -> None:
    async with transport_for(stack, tls) as transport:
        served = [served_by(await transport(url(nginx, "limited"), b"{}")) for _ in range(7)]
    assert [number for _, number in served] == [1, 2, 3, 1, 2, 3, 1]
    assert len({serial for serial, _ in served}) == 3


async def test_connection_close_answers_are_honoured(
    nginx: Nginx, tls: Tls, stack: HttpClient
) -> None:
    async with transport_for(stack, tls) as transport:
        served = [served_by(await transport(url(nginx, "close"), b"{}")) for _ in range(3)]
    assert [number for _, number in served] == [1, 1, 1]
    assert len({serial for serial, _ in served}) == 3


def raw_https_answer(tls: Tls, port: int, path: str) -> bytes:
    """What nginx sends on the wire for a POST to `path` (to check how it frames it)."""
    context = tls.client_context()
    with (
        socket.create_connection(("127.0.0.1", port)) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls_sock,
    ):
        tls_sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
            "Connection: close\r\n\r\n{}".encode()
        )
        data = b""
        while chunk := tls_sock.recv(65536):
            data += chunk
    return data


async def test_chunked_answers_are_read_whole(nginx: Nginx, tls: Tls, stack: HttpClient) -> None:
    wire = await asyncio.to_thread(raw_https_answer, tls, nginx.ports["main"], "/chunked/")
    assert b"transfer-encoding: chunked" in wire.lower()
    async with transport_for(stack, tls) as transport:
        for _ in range(2):  # and the connection is reusable after a chunked answer
            status, body, _ = await transport(url(nginx, "main", "/chunked/"), b"{}")
            assert status == 200
            assert json.loads(body) == {"messages": [{"id": "wamid.1"}, {"id": "wamid.2"}]}


async def test_a_slow_answer_is_read_whole(nginx: Nginx, tls: Tls, stack: HttpClient) -> None:
    """limit_rate 1k: about 3 KB trickle in over seconds, inside the read timeout."""
    async with transport_for(stack, tls, read_timeout_s=20) as transport:
        status, body, _ = await transport(url(nginx, "main", "/limited/"), b"{}")
    assert (status, body) == (200, SLOW_BODY.encode())


async def test_no_answer_is_a_maybe_sent_read_timeout(
    nginx: Nginx, tls: Tls, upstream: RecordingUpstream, stack: HttpClient
) -> None:
    path = f"/upstream/{stack}/timeout/hang/messages"
    async with transport_for(stack, tls, read_timeout_s=0.3) as transport:
        with pytest.raises(TransportError, match="read timeout") as info:
            await transport(url(nginx, "main", path), b"{}")
    assert info.value.maybe_sent is True
    async with asyncio.timeout(10):  # and indeed the request had gone all the way
        while path not in upstream.seen:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(("what", "status"), [("close", 502), ("hang", 504)])
async def test_a_gateways_bare_5xx_after_forwarding_is_maybe_sent(
    nginx: Nginx,
    tls: Tls,
    upstream: RecordingUpstream,
    stack: HttpClient,
    what: str,
    status: int,
) -> None:
    """nginx read the whole request, passed it to its upstream, and then answered a bare
    502 (upstream closed without answering) or 504 (upstream too slow). The upstream had
    the message: resending on such an answer is how duplicates happen."""
    async with transport_for(stack, tls) as transport:
        client = CloudApiClient(
            base_url=f"https://127.0.0.1:{nginx.ports['main']}/upstream/{stack}",
            api_version=str(status),
            phone_number_id=what,
            transport=transport,
        )
        with pytest.raises(TransportError) as info:
            await client.send_text("+15551234567", "hi")
    path = f"/upstream/{stack}/{status}/{what}/messages"
    assert (info.value.maybe_sent, info.value.http_status) == (True, status)
    assert path in upstream.seen


async def test_tls_is_verified_against_the_ca(nginx: Nginx, tls: Tls, stack: HttpClient) -> None:
    async with transport_for(stack, None) as transport:  # the system store: no test CA
        with pytest.raises(TransportError, match="certificate") as info:
            await transport(url(nginx, "main"), b"{}")
    assert info.value.maybe_sent is False
    async with transport_for(stack, tls) as transport:  # the CA, but a cert for another name
        with pytest.raises(TransportError, match=r"certificate|match") as info:
            await transport(url(nginx, "other_name"), b"{}")
    assert info.value.maybe_sent is False


# -- through tinyproxy ------------------------------------------------------------------


def access_log_lines(nginx: Nginx) -> list[str]:
    return nginx.access_log.read_text().splitlines()


async def test_through_the_proxy_with_credentials(
    nginx: Nginx, tls: Tls, tinyproxy: Tinyproxy, stack: HttpClient
) -> None:
    before = len(tinyproxy.connects())
    proxy = ProxyConfig.from_strings(tinyproxy.url(), None)
    async with transport_for(stack, tls, proxy=proxy) as transport:
        served = [served_by(await transport(url(nginx, "main"), b"{}")) for _ in range(3)]
    # One tunnel, kept alive: three requests on one nginx connection.
    assert [number for _, number in served] == [1, 2, 3]
    connects = tinyproxy.connects()[before:]
    assert len(connects) == 1
    assert f"127.0.0.1:{nginx.ports['main']}" in connects[0]


@pytest.mark.parametrize(
    "password", ["n0t-the-pa55word", None], ids=["wrong-password", "no-credentials"]
)
async def test_a_407_from_the_proxy_stops_sending_and_reaches_nothing(
    nginx: Nginx, tls: Tls, tinyproxy: Tinyproxy, stack: HttpClient, password: str | None
) -> None:
    before = len(access_log_lines(nginx))
    proxy = ProxyConfig.from_strings(tinyproxy.url(password=password), None)
    async with transport_for(stack, tls, proxy=proxy) as transport:
        with pytest.raises(WhatsAppError) as info:
            await transport(url(nginx, "main"), b"{}")
    assert not isinstance(info.value, TransportError)
    # tinyproxy 1.11 answers 401 where RFC 9110 says 407; both mean "credentials".
    assert info.value.error_class == "auth"
    assert info.value.http_status in (401, 407)
    assert "n0t-the-pa55word" not in str(info.value)
    assert f"127.0.0.1:{tinyproxy.port}" in str(info.value)
    assert len(access_log_lines(nginx)) == before


async def test_no_proxy_hosts_are_reached_directly(
    nginx: Nginx, tls: Tls, tinyproxy: Tinyproxy, stack: HttpClient
) -> None:
    before = len(tinyproxy.connects())
    proxy = ProxyConfig.from_strings(tinyproxy.url(), "localhost,127.0.0.0/8")
    async with transport_for(stack, tls, proxy=proxy) as transport:
        served_by(await transport(url(nginx, "main"), b"{}"))
    assert len(tinyproxy.connects()) == before


async def test_a_tunnel_to_nowhere_is_not_sent(
    tls: Tls, tinyproxy: Tinyproxy, stack: HttpClient
) -> None:
    proxy = ProxyConfig.from_strings(tinyproxy.url(), None)
    nowhere = f"https://127.0.0.1:{free_port()}{PATH}"
    async with transport_for(stack, tls, proxy=proxy) as transport:
        with pytest.raises(TransportError) as info:
            await transport(nowhere, b"{}")
    assert info.value.maybe_sent is False
    assert re.search(r"HTTP 5\d\d", str(info.value))
