"""POST/GET /webhook over real loopback HTTP: verification, signatures, size limit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.settings import load_settings
from dripline.store import Store
from dripline.whatsapp.webhooks import SIGNATURE_HEADER, sign

SECRET = "app-secret"
VERIFY = "verify-me"
LIMIT = 4096


def status_body(wamid: str = "wamid.A", status: str = "delivered") -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1"},
        "statuses": [
            {"id": wamid, "status": status, "timestamp": "1767225600", "recipient_id": "1415"}
        ],
    }
    doc = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "9", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(doc).encode()


async def inbox_rows(store: Store) -> int:
    return len((await store.snapshot()).inbox)


@pytest.fixture
async def served(tmp_path: Path, store: Store) -> AsyncIterator[tuple[str, Store]]:
    settings = load_settings(
        database_url="sqlite:///unused.db",
        flows_dir=tmp_path / "flows",
        whatsapp_app_secret=SECRET,
        whatsapp_verify_token=VERIFY,
        webhook_max_body_bytes=LIMIT,
        api_token="t" * 32,
    )
    app = create_app(settings, store=store, process_inbox=False)
    async with running_server(app) as base:
        yield base, store


async def post(base: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/webhook", data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.text()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "c-123"}, 200),
        ({"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "c-123"}, 403),
        ({"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "c"}, 403),
        ({"hub.mode": "subscribe", "hub.verify_token": VERIFY}, 403),
        ({}, 403),
    ],
)
async def test_verification(
    served: tuple[str, Store], params: dict[str, str], expected: int
) -> None:
    base, _ = served
    async with aiohttp.ClientSession() as http, http.get(f"{base}/webhook", params=params) as r:
        assert r.status == expected
        text = await r.text()
        if expected == 200:
            assert text == "c-123" and r.content_type == "text/plain"
        assert VERIFY not in text


async def test_good_signature_is_stored_before_200(served: tuple[str, Store]) -> None:
    base, store = served
    body = status_body()
    status, text = await post(base, body, {SIGNATURE_HEADER: sign(body, SECRET)})
    assert status == 200 and json.loads(text) == {"status": "stored"}
    assert await inbox_rows(store) == 1
    [stored] = (await store.snapshot()).inbox
    assert stored.body.encode() == body and stored.processed_at is None


@pytest.mark.parametrize("case", ["missing", "wrong-secret", "changed-byte", "garbage", "empty"])
async def test_bad_signatures_are_401_and_store_nothing(
    served: tuple[str, Store], case: str
) -> None:
    base, store = served
    body = status_body()
    headers = {
        "missing": {},
        "wrong-secret": {SIGNATURE_HEADER: sign(body, "other-secret")},
        "changed-byte": {SIGNATURE_HEADER: sign(body, SECRET)},
        "garbage": {SIGNATURE_HEADER: "sha256=zz"},
        "empty": {SIGNATURE_HEADER: ""},
    }[case]
    if case == "changed-byte":
        body = body.replace(b"delivered", b"delivereD")
    status, text = await post(base, body, headers)
    assert status == 401 and SIGNATURE_HEADER in json.loads(text)["detail"]
    assert SECRET not in text
    assert await inbox_rows(store) == 0


async def test_oversized_bodies_are_413_and_store_nothing(served: tuple[str, Store]) -> None:
    base, store = served
    body = b'{"object": "' + b"x" * LIMIT + b'"}'
    status, _ = await post(base, body, {SIGNATURE_HEADER: sign(body, SECRET)})
    assert status == 413
    # Chunked (no Content-Length): the limit applies while reading.

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 1024

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/webhook", data=chunks()) as resp,
    ):
        assert resp.status == 413
    assert await inbox_rows(store) == 0


async def test_signed_garbage_is_stored_and_acknowledged(served: tuple[str, Store]) -> None:
    base, store = served
    for body in (b"not json at all", b'{"object": 1}', b"\xff\xfe\x00binary"):
        status, _ = await post(base, body, {SIGNATURE_HEADER: sign(body, SECRET)})
        assert status == 200
    assert await inbox_rows(store) == 3


async def test_no_app_secret_rejects_everything(tmp_path: Path, sqlite_url: str) -> None:
    settings = load_settings(
        database_url=sqlite_url, flows_dir=tmp_path / "flows", api_token="t" * 32
    )
    async with running_server(create_app(settings)) as base:
        body = status_body()
        status, _ = await post(base, body, {SIGNATURE_HEADER: sign(body, "")})
        assert status == 401
