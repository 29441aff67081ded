"""Meta's documented webhook payloads through dripline's parser, and against the fake.

The corpus (tests/fixtures/meta_webhooks.py) is the reference pages' own examples.
Replaying it checks the parser reads what Meta sends; comparing it with the fake's
payload builders checks the fake sends what Meta documents.
"""

import json
from typing import Any

import pytest

from dripline.fake import FakeConfig, FakeState, WebhookSender
from dripline.fake.payloads import Inbound, inbound_contacts, inbound_message, status_item
from dripline.fake.rules import api_error, pricing_for, value_error
from dripline.whatsapp import parse_webhook
from tests.fixtures.meta_webhooks import CORPUS, value_of

BUSINESS = "15550783881"


def shape(x: Any) -> Any:
    """Keys and value types, recursively: what a parser can rely on."""
    if isinstance(x, dict):
        return {k: shape(v) for k, v in x.items()}
    if isinstance(x, list):
        return [shape(x[0])] if x else []
    return type(x).__name__


@pytest.mark.parametrize(("name", "source", "payload"), CORPUS, ids=[c[0] for c in CORPUS])
def test_the_parser_reads_every_documented_payload(
    name: str, source: str, payload: dict[str, Any]
) -> None:
    batch = parse_webhook(payload)
    value = value_of(payload)
    raw_messages = value.get("messages", [])
    assert [(m.from_, m.id, m.type) for m in batch.messages] == [
        (m["from"], m["id"], m["type"]) for m in raw_messages
    ], source
    assert [(s.id, s.status, s.recipient_id) for s in batch.statuses] == [
        (s["id"], s["status"], s["recipient_id"]) for s in value.get("statuses", [])
    ], source
    for parsed, raw in zip(batch.statuses, value.get("statuses", []), strict=True):
        assert [e.code for e in parsed.errors] == [e["code"] for e in raw.get("errors", [])]
    if name == "button":
        assert batch.messages[0].text == "Unsubscribe"
    if name in ("list_reply", "button_reply"):
        assert batch.messages[0].text == raw_messages[0]["interactive"][name]["title"]
    if name == "unsupported":
        assert batch.messages[0].errors[0].code == 131051


def _inbound_for(name: str, item: dict[str, Any]) -> Inbound:
    reply_to = item.get("context", {}).get("id")
    if name == "text":
        return Inbound("text", item["text"]["body"], reply_to=reply_to)
    if name == "button":
        button = item["button"]
        return Inbound("button", button["text"], payload=button["payload"], reply_to=reply_to)
    if name in ("list_reply", "button_reply"):
        reply = item["interactive"][name]
        return Inbound(
            name,
            reply["title"],
            reply_id=reply["id"],
            description=reply.get("description"),
            reply_to=reply_to,
        )
    if name == "image":
        return Inbound("image", item["image"]["caption"])
    if name.startswith("reaction"):
        reaction = item["reaction"]
        return Inbound("reaction", emoji=reaction.get("emoji"), reply_to=reaction["message_id"])
    if name == "unsupported":
        return Inbound("unsupported", unsupported_type=item["unsupported"]["type"])
    assert name == "system"
    return Inbound("system", new_wa_id=item["system"]["wa_id"])


MESSAGE_CASES = [c for c in CORPUS if "messages" in value_of(c[2])]


@pytest.mark.parametrize(
    ("name", "source", "payload"), MESSAGE_CASES, ids=[c[0] for c in MESSAGE_CASES]
)
def test_the_fakes_inbound_messages_have_metas_shape(
    name: str, source: str, payload: dict[str, Any]
) -> None:
    value = value_of(payload)
    [item] = value["messages"]
    ours = inbound_message(
        _inbound_for(name, item),
        wa_id=item["from"],
        message_id=item["id"],
        timestamp=int(item["timestamp"]),
        business_number=BUSINESS,
        media_id=item.get("image", {}).get("id", "1"),
    )
    assert shape(ours) == shape(item), source
    if name not in ("system", "image"):  # the user's name and the media URL differ
        assert ours == item, source
    assert ("contacts" in value) == bool(inbound_contacts([ours])), source


def test_the_fakes_statuses_and_value_errors_have_metas_shape() -> None:
    cases = {name: value_of(payload) for name, _, payload in CORPUS}
    [sent] = cases["status_sent"]["statuses"]
    ours = status_item(
        wamid=sent["id"],
        status="sent",
        timestamp=int(sent["timestamp"]),
        recipient_id=sent["recipient_id"],
        callback_data=None,
        pricing=pricing_for("sent", "template", "marketing", False),
        conversation={"id": "c", "expiration_timestamp": "1", "origin": {"type": "marketing"}},
    )
    assert shape(ours) == shape(sent)
    assert ours["pricing"] == sent["pricing"]
    [failed] = cases["status_failed"]["statuses"]
    ours = status_item(
        wamid=failed["id"],
        status="failed",
        timestamp=int(failed["timestamp"]),
        recipient_id=failed["recipient_id"],
        callback_data="never on failed",
        error=api_error(131049, failed["errors"][0]["error_data"]["details"]),
    )
    assert shape(ours) == shape(failed)
    assert cases["value_errors"]["errors"] == [value_error()]


def test_the_fakes_envelope_has_metas_shape() -> None:
    state = FakeState(FakeConfig(waba_id="102290129340398", display_phone_number=BUSINESS))
    _, _, payload = CORPUS[0]
    item = value_of(payload)["messages"][0]
    body = WebhookSender(state)._body("106540352242922", "messages", [item])
    ours = json.loads(body)
    assert ours["entry"][0]["changes"][0]["value"]["contacts"][0]["wa_id"] == item["from"]
    ours["entry"][0]["changes"][0]["value"]["contacts"] = value_of(payload)["contacts"]
    assert ours == payload
