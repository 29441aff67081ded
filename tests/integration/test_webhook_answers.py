"""Typed answers through the inbox processor on every store backend: taps and typed
replies stored with their typed answer, re-asks that a redelivered or a second invalid
reply never doubles, and the re-ask's own message key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dripline.clock import FakeClock
from dripline.flows import FlowSet, load_flows
from dripline.inbox import InboxProcessor
from dripline.store import ConversationUpdate, MessageUpdate, Outcome, Reservation, Store
from tests.integration.test_webhook_processing import (
    NOW,
    PHONE,
    TS,
    detail,
    envelope,
    inbound,
    run,
    sent_question,
)

FLOW = """
name: survey
steps:
  - id: ok
    text: "Is it working?"
    kind: yes_no
    wait_for_reply: true
    reply_timeout: 1h
    reminder: {after: 30m, text: "Still there?"}
    next: {yes: bye, no: why}
  - {id: why, text: "What broke?", wait_for_reply: true, reply_timeout: 1h}
  - {id: bye, text: "Thanks!"}
"""


@pytest.fixture
def flows(tmp_path: Path) -> FlowSet:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "survey.yaml").write_text(FLOW)
    return load_flows(tmp_path / "flows")


@pytest.fixture
def processor(store: Store, flows: FlowSet) -> InboxProcessor:
    return InboxProcessor(store, flows, FakeClock(NOW), opt_out_keywords=("STOP",))


def tap(reply_id: str, title: str, wamid: str) -> str:
    message = {
        "from": PHONE[1:],
        "id": wamid,
        "timestamp": TS,
        "type": "interactive",
        "context": {"from": "15550000000", "id": "wamid.Q1"},
        "interactive": {"type": "button_reply", "button_reply": {"id": reply_id, "title": title}},
    }
    return envelope({"messages": [message]})


def typed(answers: Any) -> list[tuple[Any, ...]]:
    return [(a.step, a.body, a.answer_kind, a.answer_option, a.valid) for a in answers]


async def test_a_tap_is_stored_as_its_option_and_branches(
    store: Store, processor: InboxProcessor
) -> None:
    cid, _ = await sent_question(store)
    await run(processor, tap("no", "No", "wamid.IN1"))
    conv, _, answers = await detail(store, cid)
    assert (conv.state, conv.step, conv.purpose) == ("in_progress", 1, "question")
    assert typed(answers) == [(0, "No", "option", "no", True)]


async def test_invalid_replies_are_kept_and_re_asked_once_each(
    store: Store, processor: InboxProcessor
) -> None:
    cid, _ = await sent_question(store)
    body = inbound("maybe", "wamid.IN1")
    await run(processor, body)
    await run(processor, body)  # Meta delivers it again: nothing more
    await run(processor, inbound("hmm", "wamid.IN2"))  # before the re-ask went out
    conv, _, answers = await detail(store, cid)
    assert (conv.state, conv.step, conv.purpose, conv.next_send_at) == (
        "in_progress",
        0,
        "reask1",
        NOW,
    )
    assert typed(answers) == [
        (0, "maybe", "option", None, False),
        (0, "hmm", "option", None, False),
    ]
    # The re-ask is its own message, reserved once however often it is claimed.
    claimed = await store.claim_due(10, 60, "w", NOW)
    assert [c.purpose for c in claimed] == ["reask1"]
    [first] = await store.reserve([Reservation(cid, 0, "reask1", NOW)], "w", NOW)
    assert first.ok
    msg = MessageUpdate(first.message_id, "sent", wamid="wamid.R1", sent_at=NOW)
    update = ConversationUpdate(cid, "awaiting_reply", 0, "timeout1", NOW + timedelta(hours=1), 0)
    await store.record_results([Outcome(update, msg)], "w", NOW)
    # After the first re-ask went out, the next invalid reply earns the second.
    await run(processor, inbound("perhaps", "wamid.IN3"))
    conv, msgs, _ = await detail(store, cid)
    assert conv.purpose == "reask2"
    assert [(m.step, m.purpose) for m in msgs] == [(0, "question"), (0, "reask1")]
    # A worker that claims it and tries re-ask 1 again is refused: that key is taken.
    await store.claim_due(10, 60, "w2", NOW)
    [again] = await store.reserve([Reservation(cid, 0, "reask1", NOW)], "w2", NOW)
    assert not again.ok and again.prior_status == "sent"
