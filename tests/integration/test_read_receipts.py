"""Read receipts (issue 15, item 7) over real loopback HTTP: the client marks a message
read on the fake, which accepts it only for a message its number received (as Meta
documents: 131009 otherwise); the inbox processor marks each answer of a flow with
`read_receipts: true` read after its batch commits, on every store backend, and a
refused receipt never holds up the flow."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from dripline.clock import FakeClock
from dripline.errors import WhatsAppError
from dripline.fake import RunningFake, running_fake
from dripline.flows import FlowSet, load_flows
from dripline.inbox import InboxProcessor
from dripline.inbox.receipts import ReadReceipts
from dripline.store import Store
from dripline.whatsapp import CloudApiClient
from tests.fixtures.fake import FAKE_NUMBER, FAKE_TOKEN, WebhookReceiver, webhook_config
from tests.integration.test_webhook_processing import NOW, PHONE, inbound, sent_question

FLOWS = {
    "survey": """
name: survey
read_receipts: true
steps:
  - text: "How is it going?"
    wait_for_reply: true
    reply_timeout: 1h
  - text: "Anything else?"
    wait_for_reply: true
    reply_timeout: 1h
""",
    "quiet": """
name: quiet
steps:
  - text: "How is it going?"
    wait_for_reply: true
    reply_timeout: 1h
""",
}


def _flows(tmp_path: Path, *, receipts: bool = True) -> FlowSet:
    (tmp_path / "flows").mkdir()
    for name, text in FLOWS.items():
        if not receipts:
            text = text.replace("read_receipts: true\n", "")
        (tmp_path / "flows" / f"{name}.yaml").write_text(text)
    return load_flows(tmp_path / "flows")


async def _user_writes(fake: RunningFake, receiver: WebhookReceiver, text: str) -> str:
    """The user (PHONE) writes `text` to FAKE_NUMBER; returns the webhook body."""
    before = len(receiver.posts)
    fake.webhooks.schedule_inbound(FAKE_NUMBER, PHONE[1:], text)
    await receiver.wait_for(lambda: len(receiver.posts) > before)
    return receiver.posts[-1][0].decode()


def _wamid(body: str) -> str:
    value = json.loads(body)["entry"][0]["changes"][0]["value"]
    wamid: str = value["messages"][0]["id"]
    return wamid


@pytest.fixture
async def fake(webhook_receiver: WebhookReceiver) -> AsyncIterator[RunningFake]:
    async with running_fake(webhook_config(webhook_receiver, "secret")) as running:
        yield running


def _client(fake: RunningFake) -> CloudApiClient:
    return CloudApiClient(
        base_url=fake.base_url, access_token=FAKE_TOKEN, phone_number_id=FAKE_NUMBER
    )


async def test_the_fake_marks_only_messages_its_number_received(
    fake: RunningFake, webhook_receiver: WebhookReceiver
) -> None:
    wamid = _wamid(await _user_writes(fake, webhook_receiver, "hello"))
    async with _client(fake) as client:
        await client.mark_read(wamid)
        sent = await client.send_text(PHONE, "hi back")
        for bad, sender in (("wamid.NOPE", None), (sent.wamid, None), (wamid, "999")):
            with pytest.raises(WhatsAppError) as refused:
                await client.mark_read(bad, sender=sender)
            assert refused.value.code == 131009, bad
    assert fake.state.marked_read == [wamid]
    url = f"{fake.base_url}/v23.0/{FAKE_NUMBER}/messages"
    headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for body in (
            {"messaging_product": "whatsapp", "status": "delivered", "message_id": wamid},
            {"messaging_product": "whatsapp", "status": "read"},
            {"status": "read", "message_id": wamid},
        ):
            async with http.post(url, json=body) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == 100, body


async def test_answers_are_marked_read_when_the_flow_asks(
    store: Store, tmp_path: Path, fake: RunningFake, webhook_receiver: WebhookReceiver
) -> None:
    flows = _flows(tmp_path)
    receipts = ReadReceipts(_client(fake))
    processor = InboxProcessor(store, flows, FakeClock(NOW), receipts=receipts)
    await sent_question(store)  # survey: read_receipts
    answer = await _user_writes(fake, webhook_receiver, "great")
    stray = await _user_writes(fake, webhook_receiver, "STOP")  # an opt-out: no receipt
    await store.insert_inbox([answer], NOW)
    assert (await processor.drain()).advanced == 1
    await store.insert_inbox([stray], NOW)
    await processor.drain()
    await receipts.close()
    assert fake.state.marked_read == [_wamid(answer)]
    assert (receipts.sent, receipts.failed) == (1, 0)


async def test_no_receipt_for_a_flow_without_them(
    store: Store, tmp_path: Path, fake: RunningFake, webhook_receiver: WebhookReceiver
) -> None:
    flows = _flows(tmp_path, receipts=False)
    receipts = ReadReceipts(_client(fake))
    processor = InboxProcessor(store, flows, FakeClock(NOW), receipts=receipts)
    await sent_question(store)
    await store.insert_inbox([await _user_writes(fake, webhook_receiver, "great")], NOW)
    assert (await processor.drain()).advanced == 1
    await receipts.close()
    assert (receipts.sent, receipts.failed, fake.state.marked_read) == (0, 0, [])


async def test_a_refused_receipt_never_blocks_the_flow(
    store: Store, tmp_path: Path, fake: RunningFake
) -> None:
    flows = _flows(tmp_path)
    receipts = ReadReceipts(_client(fake))
    processor = InboxProcessor(store, flows, FakeClock(NOW), receipts=receipts)
    # A message the fake never delivered: Meta would refuse its receipt (131009).
    survey, _ = await sent_question(store)
    assert (await processor.drain()).advanced == 0
    await store.insert_inbox([inbound("fine", "wamid.UNKNOWN")], NOW)
    assert (await processor.drain()).advanced == 1
    await receipts.wait()
    assert (receipts.sent, receipts.failed) == (0, 1)
    found = await store.conversation_detail(survey)
    assert found is not None and found[0].step == 1  # the flow went on
    assert fake.state.marked_read == []
