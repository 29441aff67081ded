"""The enrollment API over real loopback HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI

from dripline.clock import FakeClock
from dripline.errors import ConfigError
from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.settings import Settings, load_settings
from dripline.store import Store

TOKEN = "api-token-for-tests"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

FLOW = """
name: survey
defaults:
  name: there
steps:
  - id: q1
    text: "Hi {name}, on your {plan} plan: how is it going?"
    wait_for_reply: true
    reply_timeout: 1h
  - id: q2
    text: "Anything else?"
    wait_for_reply: true
    reply_timeout: 1h
"""


def write_flow(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "survey.yaml").write_text(FLOW)
    return flows


def make_settings(tmp_path: Path, url: str, **extra: Any) -> Settings:
    extra.setdefault("api_token", TOKEN)  # api_token=None: none
    return load_settings(
        database_url=url,
        flows_dir=write_flow(tmp_path),
        whatsapp_app_secret="app-secret",
        whatsapp_verify_token="verify-me",
        **extra,
    )


@dataclass
class Api:
    base: str
    http: aiohttp.ClientSession
    store: Store
    app: FastAPI
    clock: FakeClock

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kw) as resp:
            body = (
                await resp.json() if resp.content_type == "application/json" else await resp.text()
            )
            return resp.status, body


@pytest.fixture
async def api(tmp_path: Path, store: Store) -> AsyncIterator[Api]:
    clock = FakeClock(NOW)
    settings = make_settings(tmp_path, "sqlite:///unused.db")
    app = create_app(settings, store=store, clock=clock, process_inbox=False)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_server(app) as base, aiohttp.ClientSession(headers=auth) as http:
        yield Api(base, http, store, app, clock)


ONE = {"phone": "+14155550123", "flow": "survey", "name": "Ann", "fields": {"plan": "pro"}}


async def test_enroll_one_is_idempotent(api: Api) -> None:
    status, body = await api.call("POST", "/v1/conversations", json=ONE)
    assert status == 201, body
    assert body["created"] is True
    conv = body["conversation"]
    assert body["id"] == conv["id"]
    assert conv["state"] == "pending" and conv["step"] == 0 and conv["step_id"] == "q1"
    assert conv["next_send_at"].startswith("2026-03-02T12:00:00")
    again_status, again = await api.call(
        "POST", "/v1/conversations", json={**ONE, "phone": "14155550123"}
    )
    assert again_status == 200 and again["id"] == body["id"] and again["created"] is False
    status, detail = await api.call("GET", f"/v1/conversations/{body['id']}")
    assert status == 200
    assert detail["messages"] == [] and detail["answers"] == []
    assert detail["fields"] == {"plan": "pro"}


async def test_enroll_a_list_per_item_results(api: Api) -> None:
    await api.call("POST", "/v1/conversations", json=ONE)
    items = [
        ONE,
        {"phone": "+447911123456", "flow": "survey", "fields": {"plan": "free"}},
        {
            "phone": "+33612345678",
            "flow": "survey",
            "fields": {"plan": "x"},
            "timezone": "Europe/Paris",
            "at": "2026-03-03T09:00:00+01:00",
        },
    ]
    status, body = await api.call("POST", "/v1/conversations", json=items)
    assert status == 201, body
    assert [r["created"] for r in body["results"]] == [False, True, True]
    third = body["results"][2]["conversation"]
    assert third["timezone"] == "Europe/Paris"
    assert third["next_send_at"].startswith("2026-03-03T08:00:00")
    status, body = await api.call("POST", "/v1/conversations", json=items[:2])
    assert status == 200 and [r["created"] for r in body["results"]] == [False, False]


@pytest.mark.parametrize(
    ("item", "where"),
    [
        ({**ONE, "phone": "+1"}, "body[1].phone"),
        ({**ONE, "phone": "+14155550199", "flow": "nope"}, "body[1].flow"),
        ({**ONE, "phone": "+14155550199", "timezone": "Mars/Base"}, "body[1].timezone"),
        ({**ONE, "phone": "+14155550199", "fields": {}}, "body[1].fields.plan"),
        ({**ONE, "phone": "+14155550199", "at": "2026-03-03T09:00:00"}, "body[1].at"),
        ({**ONE, "phone": "+14155550199", "colour": "red"}, "body[1].colour"),
        ({"flow": "survey"}, "body[1].phone"),
        ("just a string", "body[1]"),
    ],
)
async def test_a_bad_item_rejects_the_whole_list(api: Api, item: Any, where: str) -> None:
    good = {**ONE, "phone": "+447911123456"}
    status, body = await api.call("POST", "/v1/conversations", json=[good, item])
    assert status == 422, body
    assert body["detail"].startswith(where), body["detail"]
    assert "\n" not in body["detail"]
    status, page = await api.call("GET", "/v1/conversations")
    assert page["items"] == []  # nothing stored, not even the good item


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "body: the body is not valid JSON"),
        (b"[]", "body: the list is empty"),
        (b"42", "body: must be a JSON object"),
        (b'{"phone": "+14155550123"}', "flow: Field required"),
    ],
)
async def test_malformed_bodies_are_422(api: Api, raw: bytes, fragment: str) -> None:
    status, body = await api.call(
        "POST", "/v1/conversations", data=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 422 and body["detail"].startswith(fragment), body


async def test_get_missing_and_bad_ids(api: Api) -> None:
    assert (await api.call("GET", "/v1/conversations/999"))[0] == 404
    status, body = await api.call("GET", "/v1/conversations/0")
    assert status == 422 and body["detail"].startswith("path.conversation_id")
    assert (await api.call("GET", "/v1/conversations/abc"))[0] == 422


async def test_cancel(api: Api) -> None:
    _, body = await api.call("POST", "/v1/conversations", json=ONE)
    cid = body["id"]
    status, conv = await api.call("POST", f"/v1/conversations/{cid}/cancel")
    assert status == 200 and conv["state"] == "cancelled" and conv["next_send_at"] is None
    status, conv = await api.call("POST", f"/v1/conversations/{cid}/cancel")
    assert status == 200 and conv["state"] == "cancelled"
    assert (await api.call("POST", "/v1/conversations/12345/cancel"))[0] == 404
    # Cancelled is final: the same phone can be enrolled in the flow again.
    status, fresh = await api.call("POST", "/v1/conversations", json=ONE)
    assert status == 201 and fresh["id"] != cid


async def test_cancel_waits_out_a_lease_then_409(api: Api) -> None:
    _, body = await api.call("POST", "/v1/conversations", json=ONE)
    claimed = await api.store.claim_due(10, 600, "worker-1", NOW)
    assert [c.id for c in claimed] == [body["id"]]
    status, err = await api.call("POST", f"/v1/conversations/{body['id']}/cancel")
    assert status == 409 and "being sent" in err["detail"]
    await api.store.release([body["id"]], "worker-1")
    status, conv = await api.call("POST", f"/v1/conversations/{body['id']}/cancel")
    assert status == 200 and conv["state"] == "cancelled"


async def test_cancel_a_finished_conversation_is_409(api: Api) -> None:
    _, body = await api.call("POST", "/v1/conversations", json=ONE)
    await api.call("POST", f"/v1/conversations/{body['id']}/cancel")
    # A second enrollment, then completed through the store's own path.
    _, other = await api.call("POST", "/v1/conversations", json=ONE)
    from dripline.store import ConversationUpdate, Outcome

    claimed = await api.store.claim_due(10, 60, "w", NOW)
    await api.store.record_results(
        [Outcome(ConversationUpdate(claimed[0].id, "completed", 0, "question", None, 0))], "w", NOW
    )
    status, err = await api.call("POST", f"/v1/conversations/{other['id']}/cancel")
    assert status == 409 and "already completed" in err["detail"]


async def test_list_is_keyset_paged_and_filtered(api: Api) -> None:
    phones = [f"+1415555{n:04d}" for n in range(100, 107)]
    items = [{"phone": p, "flow": "survey", "fields": {"plan": "p"}} for p in phones]
    _, body = await api.call("POST", "/v1/conversations", json=items)
    ids = [r["id"] for r in body["results"]]
    await api.call("POST", f"/v1/conversations/{ids[0]}/cancel")
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        status, page = await api.call("GET", "/v1/conversations", params=params)
        assert status == 200
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    _, pending = await api.call("GET", "/v1/conversations", params={"state": "pending"})
    assert [c["id"] for c in pending["items"]] == ids[1:]
    _, cancelled = await api.call(
        "GET", "/v1/conversations", params={"state": "cancelled", "flow": "survey"}
    )
    assert [c["id"] for c in cancelled["items"]] == ids[:1]
    _, none = await api.call("GET", "/v1/conversations", params={"flow": "other"})
    assert none == {"items": [], "next_cursor": None}
    for bad in ({"state": "asleep"}, {"limit": "0"}, {"limit": "501"}, {"cursor": "x1"}):
        status, err = await api.call("GET", "/v1/conversations", params=bad)
        assert status == 422 and err["detail"].startswith("query."), (bad, err)


async def test_auth_required_when_a_token_is_set(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url, api_token=TOKEN)
    async with running_server(create_app(settings)) as base, aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            async with http.post(f"{base}/v1/conversations", json=ONE, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == "Bearer"
                assert TOKEN not in await r.text()
        ok = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(f"{base}/v1/conversations", json=ONE, headers=ok) as r:
            assert r.status == 201
        async with http.get(f"{base}/v1/conversations", headers=ok) as r:
            assert r.status == 200
        # The webhook and the health check do not take the API token.
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0", "::", "10.1.2.3"])
def test_no_server_without_a_token(tmp_path: Path, sqlite_url: str, host: str) -> None:
    """Loopback included: a browser on the same machine reaches loopback too."""
    settings = make_settings(tmp_path, sqlite_url, host=host, api_token=None)
    with pytest.raises(ConfigError, match="needs an API token"):
        create_app(settings)
    create_app(make_settings(tmp_path, sqlite_url, host=host))


def test_openapi_documents_errors_and_auth(tmp_path: Path, sqlite_url: str) -> None:
    doc = create_app(make_settings(tmp_path, sqlite_url, api_token=TOKEN)).openapi()
    post = doc["paths"]["/v1/conversations"]["post"]
    assert {"200", "201", "401", "422"} <= set(post["responses"])
    assert "oneOf" in post["requestBody"]["content"]["application/json"]["schema"]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert {"401", "413"} <= set(doc["paths"]["/webhook"]["post"]["responses"])
