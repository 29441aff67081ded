"""A `failed` status webhook drives its conversation (inbox/refusals.py), on every store
backend: the template for 131047, `failed` for undeliverable codes, a capped retry for
transient ones, and nothing while a dispatcher holds the conversation."""

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
    Conversation,
    ConversationUpdate,
    Enrollment,
    MessageUpdate,
    Outcome,
    Reservation,
    StatusUpdate,
    Store,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TS = str(int(NOW.timestamp()))

FLOW = """
name: survey
steps:
  - id: q1
    text: "How is it going?"
    wait_for_reply: true
    reply_timeout: 1h
    reminder: {after: 30m, text: "Still there?"}
    fallback: {name: survey_q1}
  - id: q2
    after: 5m
    text: "Anything else?"
"""


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def failed(wamid: str, code: int, title: str = "t", *, mid: int | None = None) -> str:
    status: dict[str, Any] = {
        "id": wamid,
        "status": "failed",
        "timestamp": TS,
        "recipient_id": "1",
        "errors": [{"code": code, "title": title}],
    }
    if mid is not None:
        status["biz_opaque_callback_data"] = str(mid)
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": "1"},
        "statuses": [status],
    }
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "9", "changes": [{"field": "messages", "value": value}]}],
        }
    )


@pytest.fixture
def processor(store: Store, tmp_path: Path) -> InboxProcessor:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "survey.yaml").write_text(FLOW)
    flows: FlowSet = load_flows(tmp_path / "flows")
    return InboxProcessor(store, flows, FakeClock(NOW), max_attempts=3, retry_base_s=1.0)


async def sent(store: Store, i: int, *, release: bool = True) -> tuple[int, int]:
    """Enroll phone(i) and record step 0's question accepted as wamid.i."""
    [res] = await store.enroll([Enrollment(phone=phone(i), flow="survey")], NOW)
    claimed = await store.claim_due(100, 60, "w", NOW)
    await store.release([c.id for c in claimed if c.id != res.id], "w")
    [r] = await store.reserve([Reservation(res.id, 0, "question", NOW)], "w", NOW)
    upd = ConversationUpdate(res.id, "awaiting_reply", 0, "reminder", NOW + timedelta(hours=1), 0)
    msg = MessageUpdate(r.message_id, "sent", wamid=f"wamid.{i}", sent_at=NOW)
    if release:
        await store.record_results([Outcome(upd, msg)], "w", NOW)
    return res.id, r.message_id


async def run(processor: InboxProcessor, *bodies: str) -> Any:
    await processor.store.insert_inbox(list(bodies), NOW)
    return await processor.drain()


async def conv(store: Store, cid: int) -> Conversation:
    return (await store.conversations_by_ids([cid]))[cid]


async def test_window_refusal_sends_the_template_once(
    store: Store, processor: InboxProcessor
) -> None:
    cid, _ = await sent(store, 1)
    stats = await run(processor, failed("wamid.1", 131047, "Re-engagement message"))
    assert stats.refused_fallbacks == 1
    c = await conv(store, cid)
    assert (c.state, c.step, c.purpose, c.next_send_at) == ("in_progress", 0, "fallback", NOW)
    assert c.last_error is not None and "131047" in c.last_error
    # Redelivered: the row is already failed, nothing happens again.
    stats = await run(processor, failed("wamid.1", 131047))
    assert stats.refused_fallbacks == 0
    assert await conv(store, cid) == c


async def test_undeliverable_fails_the_conversation_with_code_and_reason(
    store: Store, processor: InboxProcessor
) -> None:
    cid, _ = await sent(store, 1)
    await run(processor, failed("wamid.1", 131026, "Message undeliverable"))
    c = await conv(store, cid)
    assert (c.state, c.next_send_at) == ("failed", None)
    assert c.last_error is not None
    assert "131026" in c.last_error and "Message undeliverable" in c.last_error
    found = await store.conversation_detail(cid)
    assert found is not None
    [m] = found[1]
    assert (m.status, m.error_code, m.error_title) == ("failed", 131026, "Message undeliverable")


async def test_transient_refusal_is_retried_under_its_own_row_then_capped(
    store: Store, processor: InboxProcessor
) -> None:
    cid, mid = await sent(store, 1)
    await run(processor, failed("wamid.1", 131000, "Something went wrong"))
    c = await conv(store, cid)
    assert (c.state, c.step, c.purpose) == ("in_progress", 0, "question")
    assert c.next_send_at is not None and c.next_send_at > NOW
    found = await store.conversation_detail(cid)
    assert found is not None and found[1][0].status == "pending"
    # Tried max_attempts (3) times: the next refusal fails it.
    for attempt in (2, 3):
        claimed = await store.claim_due(10, 60, "w", c.next_send_at)
        assert [x.id for x in claimed] == [cid]
        [r] = await store.reserve([Reservation(cid, 0, "question", NOW)], "w", NOW)
        assert r.ok and r.message_id == mid and r.attempts == attempt
        upd = ConversationUpdate(cid, "awaiting_reply", 0, "reminder", NOW, 0)
        msg = MessageUpdate(mid, "sent", wamid=f"wamid.1.{attempt}", sent_at=NOW)
        await store.record_results([Outcome(upd, msg)], "w", NOW)
        await run(processor, failed(f"wamid.1.{attempt}", 131000))
        c = await conv(store, cid)
    assert c.state == "failed" and "gave up after 3 attempts" in (c.last_error or "")


async def test_a_leased_conversation_waits_with_its_status(
    store: Store, processor: InboxProcessor
) -> None:
    cid, mid = await sent(store, 1, release=False)  # the dispatcher still holds it
    # The status came by callback id before the dispatcher recorded the wamid.
    stats = await run(processor, failed("wamid.1", 131026, mid=mid))
    assert stats.waiting == 1 and stats.refused_failed == 0
    upd = ConversationUpdate(cid, "awaiting_reply", 0, "reminder", NOW + timedelta(hours=1), 0)
    msg = MessageUpdate(mid, "sent", wamid="wamid.1", sent_at=NOW)
    await store.record_results([Outcome(upd, msg)], "w", NOW)
    stats = await run(processor)
    assert stats.refused_failed == 1
    assert (await conv(store, cid)).state == "failed"


async def test_refusals_contract(store: Store) -> None:
    """WebhookTx.refusals finds what apply_statuses would fail; requeue makes it pending."""
    a, mid_a = await sent(store, 1)
    b, mid_b = await sent(store, 2)
    at = NOW + timedelta(seconds=1)
    updates = [
        StatusUpdate("wamid.1", "failed", at, None, 131047, "window"),
        StatusUpdate("wamid.2", "delivered", at),
        StatusUpdate("wamid.nobody", "failed", at, None, 131026, "x"),
    ]
    async with store.webhook_transaction() as tx:
        [r] = await tx.refusals(updates, NOW)
        assert (r.wamid, r.message_id, r.step, r.purpose, r.attempts) == (
            "wamid.1",
            mid_a,
            0,
            "question",
            1,
        )
        assert (r.error_code, r.conversation.id, r.busy) == (131047, a, False)
        await tx.apply_statuses(updates, NOW)
        assert await tx.refusals(updates, NOW) == []  # already failed
        assert await tx.requeue_messages([mid_a, mid_b], NOW) == 1  # only the failed one
    found = await store.conversation_detail(a)
    assert found is not None
    m = found[1][0]
    # The refused attempt's wamid stays: its late statuses are recognized as stale.
    assert (m.status, m.error_code, m.wamid, m.sent_at, m.webhook_at) == (
        "pending",
        131047,
        "wamid.1",
        None,
        None,
    )
    async with store.webhook_transaction() as tx:
        late = [StatusUpdate("wamid.1", "sent", at, mid_a), StatusUpdate("wamid.1", "failed", at)]
        assert await tx.refusals(late, NOW) == []
        res = await tx.apply_statuses(late, NOW)
        assert (res.applied, res.unchanged) == (0, 2)
    # The retry in flight, its answer lost: its own status comes by callback id.
    later = NOW + timedelta(hours=2)
    assert a in [c.id for c in await store.claim_due(100, 60, "w", later)]
    [r2] = await store.reserve([Reservation(a, 0, "question", later)], "w", later)
    assert r2.ok and r2.message_id == mid_a
    async with store.webhook_transaction() as tx:
        res = await tx.apply_statuses([StatusUpdate("wamid.1b", "sent", at, mid_a)], NOW)
        assert res.applied == 1
    found = await store.conversation_detail(a)
    assert found is not None and (found[1][0].status, found[1][0].wamid) == ("sent", "wamid.1b")
    assert b


async def test_a_failure_that_outruns_the_wamid_waits_for_it(
    store: Store, processor: InboxProcessor
) -> None:
    """Meta sends no callback id with `failed`: one that arrives before the dispatcher
    recorded the send's wamid matches nothing yet. It waits while sends are in flight
    instead of being dropped (the simulator found this)."""
    [res] = await store.enroll([Enrollment(phone=phone(1), flow="survey")], NOW)
    await store.claim_due(10, 60, "w", NOW)
    [r] = await store.reserve([Reservation(res.id, 0, "question", NOW)], "w", NOW)
    async with store.webhook_transaction() as tx:
        assert await tx.sends_in_flight() is True
    stats = await run(processor, failed("wamid.1", 131026))
    assert (stats.statuses_unmatched, stats.waiting) == (1, 1)
    upd = ConversationUpdate(res.id, "awaiting_reply", 0, "reminder", NOW + timedelta(hours=1), 0)
    msg = MessageUpdate(r.message_id, "sent", wamid="wamid.1", sent_at=NOW)
    await store.record_results([Outcome(upd, msg)], "w", NOW)
    async with store.webhook_transaction() as tx:
        assert await tx.sends_in_flight() is False
    stats = await run(processor)
    assert stats.refused_failed == 1 and stats.waiting == 0
    assert (await conv(store, res.id)).state == "failed"


async def test_a_failure_for_no_message_of_ours_is_not_held(
    store: Store, processor: InboxProcessor
) -> None:
    await sent(store, 1)  # nothing in flight
    stats = await run(processor, failed("wamid.someone-else", 131026))
    assert (stats.statuses_unmatched, stats.waiting) == (1, 0)
    assert (await processor.store.inbox_backlog()).waiting == 0


async def test_a_refusal_for_a_conversation_enrolled_again_fails_the_old_one(
    store: Store, processor: InboxProcessor
) -> None:
    """Step 0 accepted, the conversation completed, the user enrolled in the flow again,
    then step 0's refusal (a transient code, which would retry it): reopening the old
    conversation would make two active ones for one phone and flow, which the database
    refuses, and the whole webhook body failed for good (simulator seed 197). The old
    conversation fails with the reason; the new one is untouched."""
    [res] = await store.enroll([Enrollment(phone=phone(1), flow="survey")], NOW)
    await store.claim_due(100, 60, "w", NOW)
    [r] = await store.reserve([Reservation(res.id, 0, "question", NOW)], "w", NOW)
    upd = ConversationUpdate(res.id, "completed", 0, "question", None, 0)
    msg = MessageUpdate(r.message_id, "sent", wamid="wamid.1", sent_at=NOW)
    await store.record_results([Outcome(upd, msg)], "w", NOW)
    [again] = await store.enroll([Enrollment(phone=phone(1), flow="survey")], NOW)
    assert again.created and again.id != res.id
    stats = await run(processor, failed("wamid.1", 131000, "Something went wrong"))
    assert (stats.refused_failed, stats.refused_retries) == (1, 0)
    old = await conv(store, res.id)
    assert old.state == "failed"
    assert "a newer enrollment in the same flow is active" in (old.last_error or "")
    assert (await conv(store, again.id)).state == "pending"
    backlog = await store.inbox_backlog()
    assert (backlog.waiting, backlog.errors) == (0, 0)
