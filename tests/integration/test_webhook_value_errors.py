"""Webhook tolerance through the real inbox processor and store (every backend): one
bad item never discards the good ones of its delivery, and value-level errors are kept
and shown in `dripline status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dripline.clock import FakeClock
from dripline.flows import load_flows
from dripline.inbox import InboxProcessor
from dripline.status_report import gather_status
from dripline.store import Store
from tests.integration.test_webhook_processing import (
    FLOW,
    NOW,
    PHONE,
    TS,
    detail,
    run,
    sent_question,
)


@pytest.fixture
def processor(store: Store, tmp_path: Path) -> InboxProcessor:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "survey.yaml").write_text(FLOW)
    return InboxProcessor(store, load_flows(tmp_path / "flows"), FakeClock(NOW))


def delivery(*values: dict[str, Any]) -> str:
    changes = [
        {
            "field": "messages",
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1"},
                **v,
            },
        }
        for v in values
    ]
    return json.dumps(
        {"object": "whatsapp_business_account", "entry": [{"id": "9", "changes": changes}]}
    )


VALUE_ERROR = {
    "code": 130429,
    "title": "Rate limit hit",
    "message": "(#130429) Rate limit hit",
    "error_data": {"details": "Message failed to send because there were too many messages"},
}


async def test_a_delivery_with_bad_items_applies_all_the_good_ones(
    store: Store, processor: InboxProcessor
) -> None:
    """Issue 12's "Done when": an unknown status value, a message without `from` (a
    username-only user), a value-level `errors` array, an unknown message type and an
    item that is not even an object, in one delivery with a good status and a good
    reply: both good items are applied and the error is kept."""
    delivered_cid, delivered_mid = await sent_question(store, wamid="wamid.A")
    other = "+14155550999"
    replied_cid, _ = await sent_question(store, phone=other, wamid="wamid.B")
    body = delivery(
        {
            "statuses": [
                {"id": "wamid.A", "status": "teleported", "timestamp": TS},
                "not an object",
                {"id": "wamid.A", "status": "delivered", "timestamp": TS,
                 "recipient_id": PHONE[1:]},
            ],
            "errors": [VALUE_ERROR],
        },
        {
            "contacts": [{"profile": {"name": "u"}, "user_id": "US.123"}],
            "messages": [
                {"id": "wamid.nofrom", "timestamp": TS, "type": "text", "text": {"body": "x"}},
                {"from": other[1:], "id": "wamid.hologram", "timestamp": TS,
                 "type": "hologram", "hologram": {}},
                {"from": other[1:], "id": "wamid.reply", "timestamp": TS, "type": "text",
                 "text": {"body": "fine"}},
            ],
        },
    )  # fmt: skip
    stats = await run(processor, body)
    assert stats.rows == 1 and stats.malformed == 0
    assert stats.value_errors == 1
    snap = await store.snapshot()
    message = next(m for m in snap.messages if m.id == delivered_mid)
    assert message.status == "delivered"
    conv, _, answers = await detail(store, replied_cid)
    assert (conv.state, conv.step) == ("in_progress", 1)  # the reply advanced it
    assert "fine" in [a.body for a in answers]
    assert stats.advanced == 1
    [recorded] = await store.webhook_errors()
    assert (recorded.code, recorded.phone_number_id, recorded.count) == (130429, "1", 1)
    assert recorded.details and "too many messages" in recorded.details
    assert delivered_cid != replied_cid


async def test_value_errors_show_in_status(store: Store, processor: InboxProcessor) -> None:
    await run(processor, delivery({"errors": [VALUE_ERROR, {**VALUE_ERROR, "code": 131000}]}))
    # A redelivery of another body with the same error counts again: each is a report.
    await run(processor, delivery({"errors": [VALUE_ERROR]}))
    status = await gather_status(store, NOW)
    section = status["webhook_errors"]
    assert section["total"] == 3
    assert [(r["code"], r["count"]) for r in section["by_code"]] == [(130429, 2), (131000, 1)]
    assert section["by_code"][0]["error_class"] == "throttle"
    json.dumps(status)  # --json


async def test_value_errors_are_a_metric(store: Store, processor: InboxProcessor) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from dripline.metrics_export import BacklogCollector

    await run(processor, delivery({"errors": [VALUE_ERROR, {**VALUE_ERROR, "code": 999_002}]}))
    registry = CollectorRegistry()
    collector = BacklogCollector(store, registry)
    await collector.refresh()
    text = generate_latest(registry).decode()
    assert 'dripline_webhook_errors_total{code="130429"} 1.0' in text
    assert 'dripline_webhook_errors_total{code="other"} 1.0' in text
