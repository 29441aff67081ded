"""The inbox processor on every store backend: statuses, answers, opt-out, leases,
redelivery and malformed bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dripline.clock import FakeClock
from dripline.flows import FlowSet, load_flows
from dripline.inbox import InboxProcessor
from dripline.store import (
    ConversationUpdate,
    Enrollment,
    MessageUpdate,
    Outcome,
    Reservation,
    Store,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TS = str(int(NOW.timestamp()))
PHONE = "+14155550123"

FLOW = """
name: survey
steps:
  - id: q1
    text: "How is it going?"
    wait_for_reply: true
    reply_timeout: 1h
    reminder: {after: 30m, text: "Still there?"}
  - id: q2
    after: 5m
    text: "Anything else?"
    wait_for_reply: true
    reply_timeout: 1h
"""


def envelope(value: dict[str, Any]) -> str:
    value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "1"}, **value}
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "9", "changes": [{"field": "messages", "value": value}]}],
        }
    )


def statuses(*items: dict[str, Any]) -> str:
    return envelope(
        {"statuses": [{"timestamp": TS, "recipient_id": PHONE[1:], **i} for i in items]}
    )


def inbound(text: str, wamid: str, sender: str = PHONE[1:], ts: str = TS) -> str:
    message = {"from": sender, "id": wamid, "timestamp": ts, "type": "text", "text": {"body": text}}
    return envelope({"messages": [message]})


@pytest.fixture
def flows(tmp_path: Path) -> FlowSet:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "survey.yaml").write_text(FLOW)
    return load_flows(tmp_path / "flows")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def processor(store: Store, flows: FlowSet, clock: FakeClock) -> InboxProcessor:
    return InboxProcessor(store, flows, clock, opt_out_keywords=("STOP", "Unsubscribe"))


async def sent_question(
    store: Store, phone: str = PHONE, wamid: str | None = "wamid.Q1", status: str = "sent"
) -> tuple[int, int]:
    """Enroll and send step 0 the way the dispatcher does; returns (conversation, message)."""
    [res] = await store.enroll([Enrollment(phone=phone, flow="survey")], NOW)
    claimed = await store.claim_due(10, 60, "w", NOW)
    conv = next(c for c in claimed if c.id == res.id)
    [r] = await store.reserve([Reservation(conv.id, 0, "question", NOW)], "w", NOW)
    update = ConversationUpdate(
        conv.id, "awaiting_reply", 0, "reminder", NOW + timedelta(minutes=30), 0
    )
    if status == "unknown":  # the dispatcher lost the response: row unknown, conv waits
        update = ConversationUpdate(
            conv.id, "pending", 0, "question", NOW + timedelta(minutes=2), 1
        )
        msg = MessageUpdate(r.message_id, "unknown")
    else:
        msg = MessageUpdate(r.message_id, "sent", wamid=wamid, sent_at=NOW)
    await store.record_results([Outcome(update, msg)], "w", NOW)
    return conv.id, r.message_id


async def run(processor: InboxProcessor, *bodies: str) -> Any:
    await processor.store.insert_inbox(list(bodies), NOW)
    return await processor.drain()


async def detail(store: Store, cid: int) -> Any:
    found = await store.conversation_detail(cid)
    assert found is not None
    return found


async def test_statuses_only_move_forwards(store: Store, processor: InboxProcessor) -> None:
    cid, _ = await sent_question(store)
    await run(processor, statuses({"id": "wamid.Q1", "status": "read"}))
    await run(processor, statuses({"id": "wamid.Q1", "status": "delivered"}))
    await run(processor, statuses({"id": "wamid.Q1", "status": "sent"}))
    _, msgs, _ = await detail(store, cid)
    assert [m.status for m in msgs] == ["read"]
    # In one batch, out of order: the furthest wins.
    cid2, _ = await sent_question(store, "+14155550124", "wamid.Q2")
    await run(
        processor,
        statuses(
            {"id": "wamid.Q2", "status": "read"},
            {"id": "wamid.Q2", "status": "sent"},
            {"id": "wamid.Q2", "status": "delivered"},
        ),
    )
    _, msgs, _ = await detail(store, cid2)
    assert [m.status for m in msgs] == ["read"]


async def test_failed_stores_the_error_and_delivered_outranks_it(
    store: Store, processor: InboxProcessor
) -> None:
    cid, _ = await sent_question(store)
    error = {"code": 131026, "title": "Message undeliverable"}
    await run(processor, statuses({"id": "wamid.Q1", "status": "failed", "errors": [error]}))
    _, msgs, _ = await detail(store, cid)
    assert (msgs[0].status, msgs[0].error_code, msgs[0].error_title) == (
        "failed",
        131026,
        "Message undeliverable",
    )


async def test_callback_data_resolves_an_unknown_send(
    store: Store, processor: InboxProcessor
) -> None:
    cid, mid = await sent_question(store, status="unknown")
    await run(
        processor,
        statuses({"id": "wamid.LOST", "status": "delivered", "biz_opaque_callback_data": str(mid)}),
    )
    _, msgs, _ = await detail(store, cid)
    assert (msgs[0].status, msgs[0].wamid) == ("delivered", "wamid.LOST")
    assert msgs[0].sent_at is not None
    # The dispatcher now finds it delivered and advances without resending.
    claimed = await store.claim_due(10, 60, "w2", NOW + timedelta(minutes=3))
    [res] = await store.reserve([Reservation(cid, 0, "question", NOW)], "w2", NOW)
    assert claimed and not res.ok and res.prior_status == "delivered"
    # A callback id naming a row with another wamid changes nothing.
    await run(
        processor,
        statuses({"id": "wamid.OTHER", "status": "read", "biz_opaque_callback_data": str(mid)}),
    )
    _, msgs, _ = await detail(store, cid)
    assert msgs[0].status == "delivered"


async def test_a_reply_advances_a_waiting_conversation(
    store: Store, processor: InboxProcessor, clock: FakeClock
) -> None:
    cid, _ = await sent_question(store)
    stats = await run(processor, inbound("  great  ", "wamid.IN1"))
    assert stats.advanced == 1
    conv, _, answers = await detail(store, cid)
    assert (conv.state, conv.step, conv.purpose) == ("in_progress", 1, "question")
    assert conv.next_send_at == NOW + timedelta(minutes=5)
    assert conv.last_inbound_at == NOW
    assert [(a.step, a.body, a.kind) for a in answers] == [(0, "  great  ", "text")]


async def test_redelivery_changes_nothing(store: Store, processor: InboxProcessor) -> None:
    cid, _ = await sent_question(store)
    body = inbound("great", "wamid.IN1")
    await run(processor, body)
    before = await detail(store, cid)
    stats = await run(processor, body, body)
    assert stats.inbound_duplicate == 1 and stats.advanced == 0  # deduplicated in the batch
    assert await detail(store, cid) == before


async def test_two_answers_in_one_batch_advance_once(
    store: Store, processor: InboxProcessor
) -> None:
    cid, _ = await sent_question(store)
    later = str(int(NOW.timestamp()) + 5)
    stats = await run(
        processor, inbound("second", "wamid.B", ts=later), inbound("first", "wamid.A")
    )
    assert stats.advanced == 1
    conv, _, answers = await detail(store, cid)
    assert conv.step == 1
    # The first answer is step 0's; the second is kept with it (step 1 was not asked yet).
    assert [(a.body, a.step) for a in answers] == [("first", 0), ("second", 0)]


@pytest.mark.parametrize("word", ["STOP", " stop ", "unsubscribe"])
async def test_opt_out_stops_everything(store: Store, processor: InboxProcessor, word: str) -> None:
    cid, _ = await sent_question(store)
    [other] = await store.enroll([Enrollment(phone=PHONE, flow="demo")], NOW)
    stats = await run(processor, inbound(word, "wamid.STOP"))
    assert stats.opted_out == 2
    for conv_id in (cid, other.id):
        conv, _, _ = await detail(store, conv_id)
        assert (conv.state, conv.next_send_at) == ("opted_out", None)
    assert await store.claim_due(10, 60, "w", NOW + timedelta(days=30)) == []
    _, _, answers = await detail(store, cid)
    assert [a.kind for a in answers] == ["opt_out"]
    # A later reply is recorded and changes nothing.
    await run(processor, inbound("hello again", "wamid.LATE"))
    conv, _, _ = await detail(store, cid)
    assert conv.state == "opted_out"
    [late] = [i for i in (await store.snapshot()).inbound if i.wamid == "wamid.LATE"]
    assert late.conversation_id == other.id and late.step is None  # the newest conversation


async def test_unknown_numbers_are_recorded(store: Store, processor: InboxProcessor) -> None:
    stats = await run(processor, inbound("who is this", "wamid.U", sender="447911123456"))
    assert stats.malformed == 0
    state = await store.snapshot()
    rows, done = state.inbound, state.inbox
    assert [(r.phone, r.conversation_id, r.body) for r in rows] == [
        ("+447911123456", None, "who is this")
    ]
    assert done[0].processed_at is not None and done[0].error is None


async def test_a_leased_conversation_is_left_for_a_later_pass(
    store: Store, processor: InboxProcessor
) -> None:
    cid, _ = await sent_question(store)
    # The reminder is due and a dispatcher holds it.
    claimed = await store.claim_due(10, 60, "w", NOW + timedelta(minutes=31))
    assert [c.id for c in claimed] == [cid]
    stats = await run(processor, inbound("yes", "wamid.IN1"))
    assert stats.waiting == 1 and stats.advanced == 0
    conv, _, answers = await detail(store, cid)
    assert conv.state == "awaiting_reply" and answers == []
    [row] = (await store.snapshot()).inbox
    assert row.processed_at is None and row.error is not None
    assert row.error.startswith("waiting")
    await store.release([cid], "w")
    stats = await processor.drain()
    assert stats.advanced == 1
    conv, _, answers = await detail(store, cid)
    assert conv.step == 1 and len(answers) == 1


async def test_a_reply_to_a_resolved_unknown_send_advances(
    store: Store, processor: InboxProcessor
) -> None:
    cid, mid = await sent_question(store, status="unknown")
    await run(
        processor,
        statuses({"id": "wamid.X", "status": "delivered", "biz_opaque_callback_data": str(mid)}),
        inbound("answer", "wamid.IN"),
    )
    conv, _, answers = await detail(store, cid)
    assert (conv.state, conv.step) == ("in_progress", 1)
    assert answers[0].step == 0


async def test_malformed_bodies_are_marked_not_retried(
    store: Store, processor: InboxProcessor
) -> None:
    bodies = [
        "not json",
        '{"object": "whatsapp_business_account"}',
        '{"object": "x", "entry": [{"changes": [{"value": {"statuses": [{"id": 1}]}}]}]}',
        inbound("hi", "wamid.\x00nul"),
        inbound("hi", "w" * 300),
        statuses({"id": "wamid.big", "status": "failed", "errors": [{"code": 2**40}]}),
        inbound("x\x00y", "wamid.nulbody"),
    ]
    stats = await run(processor, *bodies)
    assert stats.rows == len(bodies) and stats.malformed == 3
    state = await store.snapshot()
    rows, recorded = state.inbox, [i.body for i in state.inbound]
    assert all(r.processed_at is not None for r in rows)
    assert [bool(r.error) for r in rows] == [True, True, True, True, True, False, False]
    assert recorded == ["xy"]
    assert (await processor.drain()).rows == 0
