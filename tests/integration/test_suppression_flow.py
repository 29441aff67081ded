"""The suppression list end to end: a STOP (or a 131050 failed status) through the inbox
processor, then the enrollment API refusing the number until a new opt-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dripline.clock import FakeClock
from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.settings import load_settings
from dripline.store import Store

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NUMBER = "100000000000001"
TOKEN = "api-token-for-tests"
FLOW = """
name: survey
steps:
  - id: q1
    text: "How is it going?"
    wait_for_reply: true
    reply_timeout: 1h
"""
BR = "+5531988887777"  # Meta may report it as 553188887777


def body(value: dict[str, Any]) -> str:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": NUMBER},
        **value,
    }
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "9", "changes": [{"field": "messages", "value": value}]}],
        }
    )


def text_from(sender: str, text: str, wamid: str) -> str:
    ts = str(int(NOW.timestamp()))
    message = {"from": sender, "id": wamid, "timestamp": ts, "type": "text", "text": {"body": text}}
    return body({"messages": [message]})


class Client:
    def __init__(self, base: str, http: aiohttp.ClientSession, app: Any, store: Store) -> None:
        self.base, self.http, self.app, self.store = base, http, app, store

    async def enroll(self, payload: object) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        url = f"{self.base}/v1/conversations"
        async with self.http.post(url, json=payload, headers=headers) as resp:
            return resp.status, await resp.json()

    async def webhooks(self, *bodies: str) -> None:
        await self.store.insert_inbox(list(bodies), NOW)
        await self.app.state.processor.drain()


@pytest.fixture
async def client(tmp_path: Path, store: Store) -> AsyncIterator[Client]:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "survey.yaml").write_text(FLOW)
    settings = load_settings(
        database_url="sqlite:///unused.db",
        flows_dir=tmp_path / "flows",
        whatsapp_app_secret="app-secret",
        whatsapp_phone_number_id=NUMBER,
        api_token=TOKEN,
    )
    app = create_app(settings, store=store, clock=FakeClock(NOW), process_inbox=False)
    async with running_server(app) as base, aiohttp.ClientSession() as http:
        yield Client(base, http, app, store)


async def test_stop_suppresses_the_number_until_a_new_opt_in(client: Client) -> None:
    status, first = await client.enroll({"phone": BR, "flow": "survey"})
    assert status == 201
    # The user writes STOP from the WhatsApp ID Meta reports (no ninth digit).
    await client.webhooks(text_from("553188887777", "STOP", "wamid.stop"))
    conv = (await client.store.conversations_by_ids([first["id"]]))[first["id"]]
    assert conv.state == "opted_out"
    opted = {(s.sender, s.phone) for s in (await client.store.snapshot()).suppressions}
    assert opted == {(NUMBER, "+553188887777"), (NUMBER, BR)}

    status, refused = await client.enroll({"phone": BR, "flow": "survey"})
    assert status == 409
    assert refused["detail"].startswith(f"phone: {BR} opted out of messages from number {NUMBER}")
    assert "opt_in" in refused["detail"]
    status, refused = await client.enroll(
        [{"phone": "+14155550001", "flow": "survey"}, {"phone": BR, "flow": "survey"}]
    )
    assert status == 409 and refused["detail"].startswith(f"body[1].phone: {BR} opted out")
    assert len((await client.store.snapshot()).conversations) == 1  # nothing written

    status, again = await client.enroll({"phone": BR, "flow": "survey", "opt_in": True})
    assert status == 201 and again["conversation"]["state"] == "pending"
    assert (await client.store.snapshot()).suppressions == ()


async def test_stop_from_a_stranger_is_remembered(client: Client) -> None:
    # No conversation yet: the opt-out still counts for later enrollments.
    await client.webhooks(text_from("14155550123", "stop", "wamid.stop"))
    status, refused = await client.enroll({"phone": "+14155550123", "flow": "survey"})
    assert status == 409, refused


async def test_131050_by_webhook_suppresses_the_number(client: Client) -> None:
    failed = {
        "id": "wamid.gone",
        "status": "failed",
        "timestamp": str(int(NOW.timestamp())),
        "recipient_id": "5215512345678",
        "errors": [{"code": 131050, "title": "User stopped marketing messages"}],
    }
    await client.webhooks(body({"statuses": [failed]}))
    status, refused = await client.enroll({"phone": "+525512345678", "flow": "survey"})
    assert status == 409 and "131050" in refused["detail"], refused
