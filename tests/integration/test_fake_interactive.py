"""Interactive messages on the fake over loopback HTTP: validated as Meta does (131008,
131009), what the user can tap recorded, and the user's taps back as webhooks that
dripline reads as inbound events carrying the tapped id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from dripline.errors import WhatsAppError
from dripline.fake import FakeConfig, RunningFake, running_fake
from dripline.flows.base import ChoiceRow, InteractiveMessage, TemplateButton, TemplateMessage
from dripline.inbox.plan import inbound_event
from dripline.whatsapp import CloudApiClient
from dripline.whatsapp.webhooks import parse_webhook
from tests.fixtures.fake import FAKE_NUMBER, FAKE_TOKEN, WebhookReceiver, webhook_config

TO = "+15551234567"
YES_NO = (ChoiceRow("yes", "Yes"), ChoiceRow("no", "No"))


async def _post(fake: RunningFake, interactive: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = {
        "messaging_product": "whatsapp",
        "to": TO,
        "type": "interactive",
        "interactive": interactive,
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{fake.base_url}/v23.0/{FAKE_NUMBER}/messages",
            json=body,
            headers={"Authorization": f"Bearer {FAKE_TOKEN}"},
        ) as resp,
    ):
        return resp.status, await resp.json()


def _buttons(*titles: str) -> dict[str, Any]:
    return {
        "type": "button",
        "body": {"text": "Pick"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": f"b{i}", "title": t}}
                for i, t in enumerate(titles)
            ]
        },
    }


def _list(rows: int, **row: str) -> dict[str, Any]:
    return {
        "type": "list",
        "body": {"text": "Pick"},
        "action": {
            "button": "Choose",
            "sections": [
                {"rows": [{"id": f"r{i}", "title": f"Row {i}", **row} for i in range(rows)]}
            ],
        },
    }


@pytest.mark.parametrize(
    ("interactive", "code", "details"),
    [
        (_buttons("A", "B", "C", "D"), 131009, "Invalid buttons count"),
        (_buttons("x" * 21), 131009, "Button title length invalid"),
        ({**_buttons("A"), "body": {"text": ""}}, 131008, "interactive['body']['text']"),
        ({**_buttons("A"), "body": {"text": "b" * 1025}}, 131009, "Body text length invalid"),
        (_list(11), 131009, "Too many rows"),
        (_list(2, description="d" * 73), 131009, "Row description length invalid"),
        ({**_list(2), "action": {"sections": []}}, 131008, "interactive['action']['button']"),
        (
            {
                **_buttons("A", "B"),
                "action": {"buttons": [{"type": "reply", "reply": {"id": "x", "title": "A"}}] * 2},
            },
            131009,
            "unique ids",
        ),
    ],
)
async def test_invalid_interactive_is_refused_as_meta_does(
    fake_api: RunningFake, interactive: dict[str, Any], code: int, details: str
) -> None:
    status, body = await _post(fake_api, interactive)
    assert status == 400
    assert body["error"]["code"] == code
    assert details in body["error"]["error_data"]["details"]
    assert fake_api.state.messages == []


async def test_the_client_gets_a_permanent_error(fake_client: CloudApiClient) -> None:
    rows = tuple(ChoiceRow(f"o{i}", f"Option {i}") for i in range(4))
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send(TO, InteractiveMessage("Pick", rows, "button"))
    assert (info.value.code, info.value.error_class) == (131009, "permanent")


async def test_buttons_lists_and_quick_replies_are_recorded_with_their_choices(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    await fake_client.send(TO, InteractiveMessage("Done?", YES_NO, "button"))
    rows = (ChoiceRow("a", "A", "First"), *(ChoiceRow(c, c.upper()) for c in "bcd"))
    await fake_client.send(TO, InteractiveMessage("Which?", rows, "list", "Choose"))
    buttons = (TemplateButton(0, "quick_reply", "yes"), TemplateButton(1, "quick_reply", "no"))
    await fake_client.send(TO, TemplateMessage("trial_setup", "en_US", ("Ana",), buttons=buttons))
    got = [(m.type, m.body, m.choices) for m in fake_api.state.messages]
    assert got == [
        ("interactive", "Done?", (("yes", "Yes", None), ("no", "No", None))),
        (
            "interactive",
            "Which?",
            (("a", "A", "First"), *((c, c.upper(), None) for c in "bcd")),
        ),
        ("template", "trial_setup", (("yes", "yes", None), ("no", "no", None))),
    ]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{fake_api.base_url}/_fake/messages?limit=1") as resp,
    ):
        [listed] = await resp.json()
    assert listed["choices"][0] == {"id": "yes", "title": "yes", "description": None}


SECRET = "interactive-secret"


@pytest.mark.parametrize(
    ("reply", "kind", "tap", "text"),
    [
        ({"kind": "button_reply", "reply_id": "yes", "text": "Yes"}, "interactive", "yes", "Yes"),
        (
            {"kind": "list_reply", "reply_id": "a", "text": "A", "description": "First"},
            "interactive",
            "a",
            "A",
        ),
        ({"kind": "button", "payload": "no", "text": "No"}, "button", "no", "No"),
        ({"kind": "text", "text": "sim"}, "text", None, "sim"),
    ],
)
async def test_a_users_tap_arrives_as_an_event_with_its_id(
    webhook_receiver: WebhookReceiver, reply: dict[str, Any], kind: str, tap: str | None, text: str
) -> None:
    config: FakeConfig = webhook_config(webhook_receiver, SECRET)
    async with (
        running_fake(config) as fake,
        CloudApiClient(
            base_url=fake.base_url, access_token=FAKE_TOKEN, phone_number_id=FAKE_NUMBER
        ) as client,
    ):
        sent = await client.send(TO, InteractiveMessage("Done?", YES_NO, "button"))
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{fake.base_url}/_fake/inbound",
                json={"from": TO, **reply, "timestamp": 1_800_000_000},
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()

        def inbound() -> list[Any]:
            return [m for body, _ in webhook_receiver.posts for m in parse_webhook(body).messages]

        await webhook_receiver.wait_for(lambda: inbound())
    [message] = inbound()
    event = inbound_event(message, 1, datetime.now(UTC))
    assert event is not None
    assert (event.kind, event.tap_id, event.text) == (kind, tap, text)
    assert event.at == datetime.fromtimestamp(1_800_000_000, UTC)  # the stamp asked for
    if tap is not None:
        assert event.context_id == sent.wamid  # a tap quotes the message tapped
