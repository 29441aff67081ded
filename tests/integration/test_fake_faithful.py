"""The fake behaves as Meta documents by default, over real loopback HTTP: the window,
WhatsApp IDs, inbound message shapes, value-level errors, templates and throughput."""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dripline.errors import WhatsAppError
from dripline.fake import FakeConfig, RunningFake, TemplateRegistry, running_fake
from dripline.flows import load_flows
from dripline.flows.base import TemplateMessage, TextMessage
from dripline.whatsapp import CloudApiClient, verify_signature
from tests.fixtures.fake import FAKE_NUMBER, FAKE_TOKEN, WebhookReceiver, webhook_config

SECRET = "fake-app-secret"
USER = "+15551234567"
CHECKIN = TemplateMessage("trial_checkin", "en_US", ("friend",))
REPO = Path(__file__).resolve().parents[2]


def config_for(receiver: WebhookReceiver, **overrides: object) -> FakeConfig:
    return webhook_config(receiver, SECRET, **{"read_fraction": 0.0, "seed": 3, **overrides})


def client_for(fake: RunningFake, number: str = FAKE_NUMBER) -> CloudApiClient:
    return CloudApiClient(base_url=fake.base_url, access_token=FAKE_TOKEN, phone_number_id=number)


def values(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """Every `entry[].changes[].value` posted so far (signatures checked)."""
    found = []
    for body, signature in receiver.posts:
        assert verify_signature(body, signature, SECRET)
        doc = json.loads(body)
        for entry in doc["entry"]:
            found += [change["value"] for change in entry["changes"]]
    return found


def items(receiver: WebhookReceiver, kind: str) -> list[dict[str, Any]]:
    return [item for value in values(receiver) for item in value.get(kind, [])]


async def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_free_form_outside_the_window_is_accepted_then_fails_with_131047(
    webhook_receiver: WebhookReceiver,
) -> None:
    async with running_fake(config_for(webhook_receiver)) as fake, client_for(fake) as client:
        result = await client.send(USER, TextMessage("Day 2: done?"), callback_data="conv:7")
        assert result.wamid.startswith("wamid.")  # accepted: 200 and a wamid
        await webhook_receiver.wait_for(lambda: len(items(webhook_receiver, "statuses")) >= 1)
        await asyncio.sleep(0.1)  # and nothing else follows
    [status] = items(webhook_receiver, "statuses")
    assert (status["id"], status["status"], status["recipient_id"]) == (
        result.wamid,
        "failed",
        "15551234567",
    )
    assert status["errors"][0]["code"] == 131047
    assert status["errors"][0]["title"] == "Re-engagement message"
    assert "biz_opaque_callback_data" not in status
    assert fake.state.snapshot()["failed_by_code"] == {"131047": 1}
    assert fake.state.messages[0].failure_code == 131047


async def test_the_window_opens_per_business_number_when_the_user_writes(
    webhook_receiver: WebhookReceiver,
) -> None:
    async with running_fake(config_for(webhook_receiver)) as fake:
        status, answer = await post(
            f"{fake.base_url}/_fake/inbound",
            {"from": USER, "text": "hello", "phone_number_id": FAKE_NUMBER},
        )
        assert (status, answer["from"], answer["phone_number_id"]) == (
            200,
            "15551234567",
            FAKE_NUMBER,
        )
        async with client_for(fake) as ours, client_for(fake, "200000000000002") as other:
            inside = await ours.send(USER, TextMessage("Thanks! Next question?"))
            outside = await other.send(USER, TextMessage("Hi from another number"))
            await webhook_receiver.wait_for(lambda: len(items(webhook_receiver, "statuses")) >= 3)
    outcome = {(s["id"], s["status"]) for s in items(webhook_receiver, "statuses")}
    assert outcome == {
        (inside.wamid, "sent"),
        (inside.wamid, "delivered"),
        (outside.wamid, "failed"),
    }
    [inbound] = items(webhook_receiver, "messages")
    assert inbound["from"] == "15551234567"


@pytest.mark.parametrize(
    ("number", "wa_id"),
    [
        ("+55 31 98765-4321", "553187654321"),  # Brazil: the ninth digit dropped
        ("+52 55 1234 5678", "5215512345678"),  # Mexico: 521
        ("+54 11 1234-5678", "5491112345678"),  # Argentina: 549
    ],
)
async def test_wa_id_differs_from_the_number_and_is_used_everywhere(
    webhook_receiver: WebhookReceiver, number: str, wa_id: str
) -> None:
    config = config_for(webhook_receiver, reply_fraction=1.0, reply_context_fraction=1.0)
    async with running_fake(config) as fake, client_for(fake) as client:
        result = await client.send(number, CHECKIN)
        await webhook_receiver.wait_for(lambda: len(items(webhook_receiver, "messages")) >= 1)
        # The user's own message from the number as dialled arrives under the ID too.
        status, answer = await post(f"{fake.base_url}/_fake/inbound", {"from": number})
        assert (status, answer["from"]) == (200, wa_id)
        await webhook_receiver.wait_for(lambda: len(items(webhook_receiver, "messages")) >= 2)
    assert result.raw["contacts"] == [{"input": number, "wa_id": wa_id}]
    assert {s["recipient_id"] for s in items(webhook_receiver, "statuses")} == {wa_id}
    reply, later = items(webhook_receiver, "messages")
    assert reply["from"] == later["from"] == wa_id
    assert reply["context"] == {"from": fake.config.display_phone_number, "id": result.wamid}
    contacts = [c for value in values(webhook_receiver) for c in value.get("contacts", [])]
    assert {c["wa_id"] for c in contacts} == {wa_id}
    assert fake.state.messages[0].wa_id == wa_id
    assert fake.state.window_open(FAKE_NUMBER, wa_id, time.monotonic())  # the reply opened it


async def test_every_inbound_kind_in_metas_shape(webhook_receiver: WebhookReceiver) -> None:
    async with running_fake(config_for(webhook_receiver)) as fake, client_for(fake) as client:
        ours = await client.send(USER, CHECKIN)
        url = f"{fake.base_url}/_fake/inbound"
        kinds: list[dict[str, Any]] = [
            {"kind": "text", "text": "plain"},
            {"kind": "text", "text": "quoted", "reply_to": "last"},
            {"kind": "button", "text": "Yes please", "payload": "YES"},
            {"kind": "button_reply", "text": "Yes", "reply_id": "yes"},
            {"kind": "list_reply", "text": "Pro", "reply_id": "pro", "description": "Paid"},
            {"kind": "image", "text": "my setup"},
            {"kind": "document", "text": "the invoice"},
            {"kind": "reaction", "emoji": "👍", "reply_to": ours.wamid},
            {"kind": "unsupported", "unsupported_type": "poll_update"},
        ]
        for body in kinds:
            status, answer = await post(url, {"from": USER, **body})
            assert status == 200, answer
        await webhook_receiver.wait_for(
            lambda: len(items(webhook_receiver, "messages")) >= len(kinds)
        )
        # Alone in its delivery, to see that it comes without contacts.
        status, answer = await post(
            url, {"from": USER, "kind": "system", "new_wa_id": "15559990000"}
        )
        assert status == 200, answer
        await webhook_receiver.wait_for(
            lambda: len(items(webhook_receiver, "messages")) > len(kinds)
        )
        bad_kind = await post(url, {"from": USER, "kind": "fax"})
        no_target = await post(url, {"from": "+15550000001", "kind": "button", "text": "x"})
        assert (bad_kind[0], no_target[0]) == (400, 400)
    messages = items(webhook_receiver, "messages")
    by_type = {m["type"]: m for m in messages}
    assert set(by_type) == {
        "text",
        "button",
        "interactive",
        "image",
        "document",
        "reaction",
        "unsupported",
        "system",
    }
    assert all(m["from"] == "15551234567" for m in messages)
    context = {"from": fake.config.display_phone_number, "id": ours.wamid}
    texts = [m for m in messages if m["type"] == "text"]
    assert [("context" in m, m["text"]["body"]) for m in texts] == [
        (False, "plain"),
        (True, "quoted"),
    ]
    assert by_type["button"] == {**by_type["button"], "context": context}
    assert by_type["button"]["button"] == {"payload": "YES", "text": "Yes please"}
    replies = [m["interactive"] for m in messages if m["type"] == "interactive"]
    assert [r["type"] for r in replies] == ["button_reply", "list_reply"]
    assert replies[1]["list_reply"]["description"] == "Paid"
    assert by_type["image"]["image"]["caption"] == "my setup"
    assert by_type["reaction"]["reaction"] == {"message_id": ours.wamid, "emoji": "👍"}
    assert by_type["unsupported"]["errors"][0]["code"] == 131051
    assert by_type["system"]["system"]["wa_id"] == "15559990000"
    for value in values(webhook_receiver):
        assert value["metadata"]["phone_number_id"] == FAKE_NUMBER
    [system_value] = [
        v for v in values(webhook_receiver) if v.get("messages", [{}])[0].get("type") == "system"
    ]
    assert "contacts" not in system_value  # system messages come without contacts


async def test_value_level_errors_on_request_and_by_fraction(
    webhook_receiver: WebhookReceiver,
) -> None:
    config = config_for(webhook_receiver, value_error_fraction=1.0, value_error_code=131000)
    async with running_fake(config) as fake, client_for(fake) as client:
        status, _ = await post(
            f"{fake.base_url}/_fake/value-error", {"phone_number_id": FAKE_NUMBER, "code": 130429}
        )
        assert status == 200
        await client.send(USER, CHECKIN)
        await webhook_receiver.wait_for(lambda: len(items(webhook_receiver, "errors")) >= 2)
    errors = items(webhook_receiver, "errors")
    assert sorted(e["code"] for e in errors) == [130429, 131000]
    for error in errors:
        assert set(error) == {"code", "title", "message", "error_data", "href"}
    carrying = [v for v in values(webhook_receiver) if "errors" in v]
    assert all("statuses" not in v and "messages" not in v for v in carrying)
    assert fake.state.snapshot()["webhooks"]["value_errors"] == 2


@pytest.mark.parametrize(("version", "conversation"), [("v23.0", True), ("v24.0", False)])
async def test_sent_and_delivered_carry_pricing(
    webhook_receiver: WebhookReceiver, version: str, conversation: bool
) -> None:
    async with (
        running_fake(config_for(webhook_receiver)) as fake,
        CloudApiClient(
            base_url=fake.base_url,
            access_token=FAKE_TOKEN,
            phone_number_id=FAKE_NUMBER,
            api_version=version,
        ) as client,
    ):
        await client.send(USER, CHECKIN, callback_data="c")
        await webhook_receiver.wait_for(lambda: len(items(webhook_receiver, "statuses")) >= 2)
    for status in items(webhook_receiver, "statuses"):
        assert status["pricing"] == {
            "billable": True,
            "pricing_model": "PMP",
            "type": "regular",
            "category": "utility",
        }
        assert status["biz_opaque_callback_data"] == "c"
        # Status reference: v23.0 and lower carry a conversation, v24.0+ omit it.
        assert ("conversation" in status) is conversation


async def test_templates_outside_the_registry_are_refused(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send(USER, TemplateMessage("hello_world", "en_US"))
    assert (info.value.code, info.value.http_status) == (132001, 404)
    assert "hello_world" in (info.value.details or "")
    fake_api.state.config.templates = None  # explicit: accept any template
    await fake_client.send(USER, TemplateMessage("hello_world", "en_US"))


def test_default_registry_has_every_template_of_the_shipped_flows() -> None:
    registry = TemplateRegistry.default()
    used = set()
    for flow in load_flows(REPO / "flows"):
        spec = flow.spec
        candidates = [spec.fallback]
        for step in spec.steps:
            candidates += [step.template, step.fallback]
            if step.reminder is not None:
                candidates.append(step.reminder.template)
        used |= {(t.name, t.language, len(t.body_params)) for t in candidates if t is not None}
    assert used, "the shipped flows use no template"
    for name, language, body in sorted(used):
        known = registry.get(name, language)
        assert known is not None, f"{name}@{language} is missing from DEFAULT_TEMPLATES"
        assert known.body == body, f"{name}@{language}: body params {known.body} != {body}"


async def http_get(url: str, token: str = FAKE_TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("config", "level"),
    [
        (FakeConfig(access_token=FAKE_TOKEN), "STANDARD"),
        (FakeConfig(access_token=FAKE_TOKEN, rate_per_s=1000), "HIGH"),
        (FakeConfig(access_token=FAKE_TOKEN, throughput_level="NOT_APPLICABLE"), "NOT_APPLICABLE"),
    ],
)
async def test_throughput_level_like_the_phone_number_node(config: FakeConfig, level: str) -> None:
    async with running_fake(config) as fake:
        url = f"{fake.base_url}/v23.0/{FAKE_NUMBER}"
        assert await http_get(f"{url}?fields=throughput") == (
            200,
            {"throughput": {"level": level}, "id": FAKE_NUMBER},
        )
        status, node = await http_get(url)
        assert status == 200
        assert set(node) == {"id", "display_phone_number", "verified_name", "quality_rating"}
        status, error = await http_get(f"{url}?fields=throughput,colour")
        assert (status, error["error"]["code"]) == (400, 100)
        status, error = await http_get(f"{url}?fields=throughput", token="wrong")
        assert (status, error["error"]["code"]) == (401, 190)
