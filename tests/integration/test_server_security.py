"""Secure by default, over real loopback HTTP: the token file, the access rules, server
limits and the webhook queue's back-pressure."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dripline.errors import ConfigError
from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.server.token import TOKEN_FILE_NAME, ensure_api_token, fingerprint
from dripline.server.webhook import InboxFull, InboxWriter
from dripline.store import MemoryStore
from tests.integration.test_server_api import TOKEN, make_settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}


# The token file ---------------------------------------------------------------------------
def test_a_token_is_generated_once_next_to_the_sqlite_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "data" / "dripline.db"
    settings = make_settings(tmp_path, f"sqlite:///{db}", api_token=None)
    first = ensure_api_token(settings)
    path = tmp_path / "data" / TOKEN_FILE_NAME
    assert (first.source, first.path) == ("generated", path)
    token = path.read_text().strip()
    assert first.settings.api_token is not None
    assert first.settings.api_token.get_secret_value() == token and len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    err = capsys.readouterr().err
    assert token in err and str(path) in err
    again = ensure_api_token(settings)
    assert again.source == "file" and again.settings.api_token == first.settings.api_token
    assert token not in capsys.readouterr().err  # shown in full only when made
    assert fingerprint(token) != token and token not in fingerprint(token)


def test_a_configured_token_wins_and_writes_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    resolved = ensure_api_token(settings)
    assert resolved.source == "setting" and resolved.settings is settings
    assert not (tmp_path / TOKEN_FILE_NAME).exists()


def test_a_token_file_may_be_named(tmp_path: Path) -> None:
    secret = tmp_path / "secrets" / "api"
    secret.parent.mkdir()
    secret.write_text("s" * 40 + "\n")
    settings = make_settings(tmp_path, "postgresql://u@h/db", api_token=None, api_token_file=secret)
    resolved = ensure_api_token(settings)
    assert resolved.source == "file" and resolved.settings.api_token is not None
    assert resolved.settings.api_token.get_secret_value() == "s" * 40
    secret.write_text("short")
    with pytest.raises(ConfigError, match="no usable token"):
        ensure_api_token(settings)


def test_an_unwritable_place_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for where in (tmp_path / "a-file" / "t", tmp_path / "a-file" / "sub" / "t"):
        settings = make_settings(tmp_path, "sqlite:///x.db", api_token=None, api_token_file=where)
        with pytest.raises(ConfigError, match="set DRIPLINE_API_TOKEN"):
            ensure_api_token(settings)


# Access rules on a real server ------------------------------------------------------------
async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, dict[str, str], str]:
    async with http.request(method, url, **kw) as r:
        return r.status, dict(r.headers), await r.text()


async def test_writes_need_the_token_json_and_our_own_host(tmp_path: Path) -> None:
    store = MemoryStore()
    settings = make_settings(tmp_path, "sqlite:///unused.db")
    app = create_app(settings, store=store, process_inbox=False)
    async with running_server(app, settings=settings) as base, aiohttp.ClientSession() as http:
        url = f"{base}/v1/conversations"
        body = '{"phone": "+14155550100", "flow": "survey", "name": "Ana", "fields": {"plan": "x"}}'
        form = {"Content-Type": "text/plain"}
        cases = [
            ({"Content-Type": "application/json"}, 401),
            ({**AUTH, **form}, 415),
            ({**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, 415),
            ({**AUTH, "Content-Type": "application/json", "Host": "evil.example:80"}, 421),
            ({**AUTH, "Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
            ({**form, "Origin": "http://evil.example"}, 403),
        ]
        for headers, expected in cases:
            status, _, text = await call(http, "POST", url, data=body, headers=headers)
            assert status == expected, (headers, text)
            assert TOKEN not in text
        assert not (await store.snapshot()).conversations
        headers = {**AUTH, "Content-Type": "application/json", "Origin": base}
        status, _, _ = await call(http, "POST", url, data=body, headers=headers)
        assert status == 201
        # Dashboard and metrics: behind the token; a browser may use Basic for reads.
        for path in ("/", "/api/dashboard", "/metrics", "/openapi.json"):
            status, hdrs, _ = await call(http, "GET", base + path, headers={"Accept": "text/html"})
            assert status == 401 and hdrs["WWW-Authenticate"].startswith("Basic"), path
        basic = "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()
        assert (await call(http, "GET", base + "/metrics", headers={"Authorization": basic}))[
            0
        ] == 200
        # Public: health, and the webhook (Meta's signature, not the token).
        status, _, _ = await call(http, "GET", base + "/healthz", headers={"Host": "10.9.9.9"})
        assert status == 200
        status, _, _ = await call(http, "POST", base + "/webhook", data=b"{}")
        assert status == 401  # the signature check, not the token


async def test_opting_out_shows_the_dashboard_and_metrics_without_the_token(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    settings = make_settings(
        tmp_path, "sqlite:///unused.db", dashboard_public=True, metrics_public=True
    )
    app = create_app(settings, store=store, process_inbox=False)
    async with running_server(app, settings=settings) as base, aiohttp.ClientSession() as http:
        assert (await call(http, "GET", base + "/metrics"))[0] == 200
        assert (await call(http, "GET", base + "/api/dashboard"))[0] == 200
        assert (await call(http, "GET", base + "/v1/conversations"))[0] == 401


# Server limits ----------------------------------------------------------------------------
async def _raw(base: str, request: bytes, *, wait_s: float = 5.0) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(wait_s):
            return await reader.read()  # until the server closes
    finally:
        writer.close()


async def test_limits_on_headers_bodies_and_connections(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        "sqlite:///unused.db",
        server_max_header_bytes=4096,
        server_header_timeout_s=0.3,
        server_body_timeout_s=0.3,
        server_max_connections=3,
    )
    store = MemoryStore()
    app = create_app(settings, store=store, process_inbox=False)
    async with running_server(app, settings=settings) as base:
        big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
        assert (await _raw(base, big)).startswith(b"HTTP/1.1 431")
        # Headers that never finish: the connection is closed, not held.
        slow = await _raw(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert slow == b"" or slow.startswith(b"HTTP/1.1 408")
        # A body that stops arriving: 408.
        head = (
            f"POST /v1/conversations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}"
            "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        ).encode()
        assert (await _raw(base, head)).startswith(b"HTTP/1.1 408")
        # More connections than allowed: 503.
        host, port = base.removeprefix("http://").split(":")
        idle = [await asyncio.open_connection(host, int(port)) for _ in range(3)]
        try:
            answer = await _raw(
                base, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 503")
        finally:
            for _, w in idle:
                w.close()


# Webhook back-pressure --------------------------------------------------------------------
async def test_a_full_webhook_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow(name: str) -> None:
        if name == "insert_inbox":
            await release.wait()

    store = MemoryStore(hook=slow)
    settings = make_settings(tmp_path, "sqlite:///unused.db", webhook_max_queued_bytes=1000)
    app = create_app(settings, store=store, process_inbox=False)
    body = b'{"object": "whatsapp_business_account", "entry": []}' + b" " * 600
    signature = "sha256=" + hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": signature, "Content-Type": "application/json"}
    async with running_server(app, settings=settings) as base, aiohttp.ClientSession() as http:
        first = asyncio.create_task(
            call(http, "POST", base + "/webhook", data=body, headers=headers)
        )
        await asyncio.sleep(0.2)  # the first body is being written, and waits
        status, hdrs, _ = await call(http, "POST", base + "/webhook", data=body, headers=headers)
        assert status == 503 and hdrs["Retry-After"] == "5"
        release.set()
        assert (await first)[0] == 200
        assert (await call(http, "POST", base + "/webhook", data=body, headers=headers))[0] == 200
    assert len((await store.snapshot()).inbox) == 2


async def test_one_body_always_fits_the_queue() -> None:
    from dripline.clock import SystemClock

    writer = InboxWriter(MemoryStore(), SystemClock(), max_queued_bytes=10)
    writer.start()
    try:
        await writer.write("x" * 100)  # bigger than the limit, but alone
    finally:
        await writer.stop()
    assert issubclass(InboxFull, Exception)


# Private files ----------------------------------------------------------------------------
async def test_a_new_sqlite_database_is_private(tmp_path: Path) -> None:
    from dripline.store import Enrollment, migrate_database, open_store

    db = tmp_path / "dripline.db"
    store = await open_store(f"sqlite:///{db}")
    try:
        await store.enroll([Enrollment(phone="+14155550100", flow="f")], datetime.now(UTC))
        files = [p for p in tmp_path.iterdir() if p.name.startswith("dripline.db")]
        assert {p.name for p in files} >= {"dripline.db"}
        for path in files:  # the database and its -wal / -shm files
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        await store.close()
    other = tmp_path / "migrated.db"
    await migrate_database(f"sqlite:///{other}")
    assert stat.S_IMODE(other.stat().st_mode) == 0o600
