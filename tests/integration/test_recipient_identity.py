"""Replies reach their conversation whatever WhatsApp ID Meta reports (issue 12 item 3).

Meta's send response returns the user's WhatsApp ID (`contacts[0].wa_id`) and warns it
may differ from the number sent, notably for Brazil (the ninth digit) and Mexico (521);
the user's replies come `from` that ID. Here over real HTTP: the dispatcher sends
through the fake Cloud API (which reports such IDs by default), users answer through
it, and its signed webhooks go through the server's intake and the inbox processor.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from dripline.clock import FakeClock, utcnow
from dripline.dispatcher.engine import Dispatcher
from dripline.fake import FakeConfig, running_fake
from dripline.flows import FlowSet, load_flows
from dripline.inbox import InboxProcessor
from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.store import (
    ConversationUpdate,
    Enrollment,
    MessageUpdate,
    Outcome,
    Reservation,
    Store,
    open_store,
)
from tests.fixtures.db import _admin_dsn
from tests.fixtures.dispatch import WEBHOOK_SECRET, client_for, fast_settings

# A template first (the window is closed for users who never wrote), then a question
# answered once.
FLOW = """\
name: ask
steps:
  - id: q1
    template: {name: trial_checkin, language: en_US, body_params: ["friend"]}
    wait_for_reply: true
    reply_timeout: 1h
  - id: q2
    after: 1h
    text: "Thanks."
"""

BR = [f"+55{area}9{8888_0000 + i:08d}" for i, area in enumerate([31, 61, 71, 81, 11] * 10)]
MX = [f"+52{area}{1234_0000 + i:08d}" for i, area in enumerate([55, 81, 33] * 17)][:50]
US = [f"+1415{5500000 + i:07d}" for i in range(50)]


def ask_flows(tmp_path: Path) -> FlowSet:
    (tmp_path / "flows").mkdir(exist_ok=True)
    (tmp_path / "flows" / "ask.yaml").write_text(FLOW)
    return load_flows(tmp_path / "flows")


async def test_150_replies_from_br_mx_and_us_reach_their_conversations(
    store: Store, tmp_path: Path
) -> None:
    flows = ask_flows(tmp_path)
    settings = fast_settings("sqlite:///unused.db", whatsapp_app_secret=WEBHOOK_SECRET)
    numbers = BR + MX + US
    results = await store.enroll([Enrollment(p, "ask") for p in numbers], utcnow())
    ids = {p: r.id for p, r in zip(numbers, results, strict=True)}
    app = create_app(settings, store=store, flows=flows)
    config = FakeConfig(
        access_token="test-token",
        app_secret=WEBHOOK_SECRET,
        sent_delay_s=0.0,
        delivered_delay_s=0.01,
        read_fraction=0.0,
        pair_interval_s=0.0,
        webhook_flush_s=0.01,
        # Some answers are lost (a loaded machine's stalls did it by chance): those
        # conversations learn their WhatsApp ID from the status webhooks alone.
        lost_response_fraction=0.2,
        seed=5,
    )
    async with running_server(app) as base:
        config.webhook_url = f"{base}/webhook"
        async with running_fake(config) as fake, client_for(fake) as client:
            d = Dispatcher(store=store, client=client, flows=flows, settings=settings)
            task = asyncio.ensure_future(d.run(max_seconds=60))
            try:
                async with asyncio.timeout(60):
                    while True:
                        rows = await store.conversations_by_ids(list(ids.values()))
                        if all(c.state == "awaiting_reply" for c in rows.values()):
                            break
                        await asyncio.sleep(0.05)
            finally:
                d.request_stop()
            await task
            assert fake.state.stats.lost_responses >= 10
            # The scenario: Meta reported a different ID for these Brazilian and all the
            # Mexican numbers, and the stored conversations know it.
            differs = [p for p in numbers if rows[ids[p]].wa_id != p[1:]]
            assert len([p for p in differs if p.startswith("+55")]) == 40
            assert len([p for p in differs if p.startswith("+52")]) == 50
            assert not [p for p in differs if p.startswith("+1")]
            async with aiohttp.ClientSession() as http:
                for i, phone in enumerate(numbers):
                    body = {"from": phone, "text": f"answer {i}"}
                    if i % 2:
                        body["reply_to"] = "last"  # half of them quote the question
                    async with http.post(f"{fake.base_url}/_fake/inbound", json=body) as resp:
                        assert resp.status == 200, await resp.text()
            async with asyncio.timeout(30):
                while True:
                    snap = await store.snapshot()
                    if (
                        len(snap.inbound) >= len(numbers)
                        and (await store.inbox_backlog()).waiting == 0
                    ):
                        break
                    await asyncio.sleep(0.05)
    by_conversation = {a.conversation_id: a for a in snap.inbound}
    missing = [p for p in numbers if ids[p] not in by_conversation]
    assert missing == []
    for i, phone in enumerate(numbers):
        answer = by_conversation[ids[phone]]
        assert (answer.step, answer.body) == (0, f"answer {i}")
    after = await store.conversations_by_ids(list(ids.values()))
    assert {(c.state, c.step) for c in after.values()} == {("in_progress", 1)}


# ---------------------------------------------------------------- routing, in the inbox
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
A, B = "100000000000001", "100000000000002"  # two business numbers (phone number ids)


def reply(sender: str, text: str, wamid: str, number: str, context: str | None = None) -> str:
    message: dict[str, Any] = {
        "from": sender,
        "id": wamid,
        "timestamp": str(int(NOW.timestamp())),
        "type": "text",
        "text": {"body": text},
    }
    if context is not None:
        message["context"] = {"from": "15550000000", "id": context}
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": number},
        "contacts": [{"profile": {"name": "U"}, "wa_id": sender}],
        "messages": [message],
    }
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "9", "changes": [{"field": "messages", "value": value}]}],
        }
    )


async def asked(
    store: Store, phone: str, flow: str, wamid: str, wa_id: str | None, sender: str | None = None
) -> int:
    """Enroll and record step 0 as sent (as the dispatcher does) with Meta's `wa_id`."""
    [res] = await store.enroll([Enrollment(phone, flow, sender=sender)], NOW)
    claimed = await store.claim_due(100, 60, "w", NOW)
    await store.release([c.id for c in claimed if c.id != res.id], "w")
    [r] = await store.reserve([Reservation(res.id, 0, "question", NOW)], "w", NOW)
    update = ConversationUpdate(
        res.id, "awaiting_reply", 0, "question", NOW + timedelta(hours=1), 0, wa_id=wa_id
    )
    msg = MessageUpdate(r.message_id, "sent", wamid=wamid, sent_at=NOW)
    await store.record_results([Outcome(update, msg)], "w", NOW)
    return res.id


async def apply(store: Store, flows: FlowSet, *bodies: str) -> None:
    processor = InboxProcessor(store, flows, FakeClock(NOW), default_sender=A)
    await store.insert_inbox(list(bodies), NOW)
    await processor.drain()


async def state(store: Store, cid: int) -> tuple[str, int, bool]:
    found = await store.conversation_detail(cid)
    assert found is not None
    conv, _, answers = found
    return conv.state, conv.step, bool(answers)


def two_flows(tmp_path: Path) -> FlowSet:
    (tmp_path / "flows").mkdir(exist_ok=True)
    (tmp_path / "flows" / "ask.yaml").write_text(FLOW)
    (tmp_path / "flows" / "other.yaml").write_text(FLOW.replace("name: ask", "name: other"))
    return load_flows(tmp_path / "flows")


async def test_a_reply_goes_to_the_conversation_on_the_number_it_was_sent_to(
    store: Store, tmp_path: Path
) -> None:
    flows = two_flows(tmp_path)
    on_a = await asked(store, MX[0], "ask", "wamid.A", "5215512340000")  # default sender: A
    on_b = await asked(store, MX[0], "other", "wamid.B", "5215512340000", sender=B)
    # Without routing the most recently moved waiting one (`on_b`) would take it.
    await apply(store, flows, reply("5215512340000", "yes", "wamid.in1", A))
    assert await state(store, on_a) == ("in_progress", 1, True)
    assert await state(store, on_b) == ("awaiting_reply", 0, False)
    # The customer-service window is per business number: B's stays closed.
    rows = await store.conversations_by_ids([on_a, on_b])
    assert rows[on_a].last_inbound_at is not None and rows[on_b].last_inbound_at is None
    await apply(store, flows, reply("5215512340000", "yes", "wamid.in2", B))
    assert await state(store, on_b) == ("in_progress", 1, True)


async def test_a_reply_quoting_our_message_goes_to_its_conversation(
    store: Store, tmp_path: Path
) -> None:
    flows = two_flows(tmp_path)
    first = await asked(store, BR[0], "ask", "wamid.first", "553188880000")
    second = await asked(store, BR[0], "other", "wamid.second", "553188880000")
    # Without context the most recently moved waiting one would take it (`second`).
    await apply(store, flows, reply("553188880000", "yes", "wamid.in1", A, "wamid.first"))
    assert await state(store, first) == ("in_progress", 1, True)
    assert await state(store, second) == ("awaiting_reply", 0, False)


async def test_stop_from_the_wa_id_opts_out_the_enrolled_number(
    store: Store, tmp_path: Path
) -> None:
    flows = two_flows(tmp_path)
    # Not sent yet (no wa_id known): found through the number's variant.
    [res] = await store.enroll([Enrollment(BR[1], "ask")], NOW)
    await apply(store, flows, reply("556188880001", "STOP", "wamid.stop", A))
    assert (await state(store, res.id))[0] == "opted_out"


# ------------------------------------------- the WhatsApp ID, when the answer was lost
def status(wamid: str, kind: str, callback: int, recipient: str | None) -> str:
    item: dict[str, Any] = {
        "id": wamid,
        "status": kind,
        "timestamp": str(int(NOW.timestamp())),
        "biz_opaque_callback_data": str(callback),
    }
    if recipient is not None:
        item["recipient_id"] = recipient
    else:  # a username-only user: a business-scoped user id instead (BSUID)
        item["recipient_user_id"] = "US.13491208655302741918"
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": A},
        "statuses": [item],
    }
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "9", "changes": [{"field": "messages", "value": value}]}],
        }
    )


async def answer_lost(store: Store, phone: str, wa_id: str | None = None) -> tuple[int, int]:
    """Enroll and send step 0 with its answer lost, as the dispatcher records it (the
    message `unknown`, no wamid; no WhatsApp ID learned unless `wa_id`, as from an
    earlier send's answer). Returns (conversation, message)."""
    [res] = await store.enroll([Enrollment(phone, "ask")], NOW)
    claimed = await store.claim_due(100, 60, "w", NOW)
    await store.release([c.id for c in claimed if c.id != res.id], "w")
    [r] = await store.reserve([Reservation(res.id, 0, "question", NOW)], "w", NOW)
    update = ConversationUpdate(
        res.id, "pending", 0, "question", NOW + timedelta(minutes=2), 1, wa_id=wa_id
    )
    await store.record_results([Outcome(update, MessageUpdate(r.message_id, "unknown"))], "w", NOW)
    return res.id, r.message_id


async def wa_id_of(store: Store, cid: int) -> str | None:
    return (await store.conversations_by_ids([cid]))[cid].wa_id


async def test_a_status_teaches_the_wa_id_a_lost_answer_would_have(
    store: Store, tmp_path: Path
) -> None:
    flows = ask_flows(tmp_path)
    br, mid = await answer_lost(store, BR[0])  # +5531988880000, WhatsApp ID 553188880000
    us, mid2 = await answer_lost(store, US[0])
    await apply(
        store,
        flows,
        # By callback id (the row has no wamid), then by the wamid that gave it.
        status("wamid.Q", "sent", mid, "553188880000"),
        status("wamid.Q2", "sent", mid2, US[0][1:]),
    )
    assert await wa_id_of(store, br) == "553188880000"
    assert await wa_id_of(store, us) == US[0][1:]
    # A later status by wamid alone finds the row too (it is known now).
    third, mid3 = await answer_lost(store, MX[0])
    await apply(store, flows, status("wamid.Q3", "sent", mid3, "x"))  # gives it its wamid
    await apply(store, flows, status("wamid.Q3", "delivered", 0, "5215512340000"))
    assert await wa_id_of(store, third) == "5215512340000"


async def test_a_status_never_overwrites_a_known_wa_id(store: Store, tmp_path: Path) -> None:
    flows = ask_flows(tmp_path)
    known, mid = await answer_lost(store, MX[0], wa_id="5215512340000")
    await apply(store, flows, status("wamid.Q", "delivered", mid, "525512340000"))
    assert await wa_id_of(store, known) == "5215512340000"


async def test_only_a_usable_recipient_id_of_an_accepted_message_teaches(
    store: Store, tmp_path: Path
) -> None:
    flows = ask_flows(tmp_path)
    # A username-only user: no recipient_id (a BSUID instead); a malformed one.
    bsuid, m1 = await answer_lost(store, US[0])
    odd, m2 = await answer_lost(store, US[1])
    # A `failed` status: its recipient_id may be only the number as sent.
    failed, m3 = await answer_lost(store, BR[1])
    await apply(
        store,
        flows,
        status("wamid.1", "sent", m1, None),
        status("wamid.2", "sent", m2, "US.1349120865"),
        status("wamid.3", "failed", m3, "5561988880001"),
    )
    assert [await wa_id_of(store, c) for c in (bsuid, odd, failed)] == [None, None, None]


@pytest.mark.postgres
async def test_a_conversation_another_transaction_holds_learns_on_the_retry(
    postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL: the processor never waits for a row lock (it could deadlock against a
    dispatcher); the status's inbox row waits instead, and the retry learns the ID."""
    flows = ask_flows(tmp_path)
    store = await open_store(postgres_url)
    try:
        cid, mid = await answer_lost(store, BR[0])
        blocker = await asyncpg.connect(_admin_dsn(postgres_url))
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("SELECT id FROM conversations WHERE id = $1 FOR UPDATE", cid)
            await apply(store, flows, status("wamid.Q", "sent", mid, "553188880000"))
            assert await wa_id_of(store, cid) is None
            [row] = (await store.snapshot()).inbox
            assert row.processed_at is None and "conversation" in (row.error or "")
            await tx.rollback()
        finally:
            await blocker.close()
        processor = InboxProcessor(store, flows, FakeClock(NOW), default_sender=A)
        await processor.drain()
        assert await wa_id_of(store, cid) == "553188880000"
        [row] = (await store.snapshot()).inbox
        assert row.processed_at is not None and row.error is None
    finally:
        await store.close()
