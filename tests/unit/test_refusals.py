"""A message accepted, then failed by status webhook: what its conversation does
(inbox/refusals.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dripline.flows import FlowSet, YamlFlow, parse_flow_text
from dripline.inbox.refusals import plan_refusals
from dripline.store import Conversation, Refusal

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _flow(name: str, text: str) -> YamlFlow:
    loaded = parse_flow_text(text, f"{name}.yaml", name)
    return YamlFlow(loaded.spec, loaded.source)


FLOWS = FlowSet(
    {
        # asks: s0 waits (template fallback), s1 waits (no template), s2 waits
        "asks": _flow(
            "asks",
            """
steps:
  - id: a
    text: "A?"
    wait_for_reply: true
    reply_timeout: 1d
    reminder: {after: 4h, text: "A!"}
    fallback: {name: t_a}
  - id: b
    text: "B?"
    wait_for_reply: true
    reply_timeout: 1d
  - id: c
    text: "C?"
    wait_for_reply: true
    reply_timeout: 1d
""",
        ),
        # tells: three texts that wait for nothing, one flow-wide template
        "tells": _flow(
            "tells",
            """
fallback: {name: t_all}
steps:
  - text: "one"
  - text: "two"
    after: 10m
  - text: "three"
    after: 1h
""",
        ),
    }
)


def conv(flow: str, state: str, step: int, purpose: str) -> Conversation:
    return Conversation(
        id=1,
        phone="+14155550100",
        flow=flow,
        step=step,
        purpose=purpose,
        state=state,
        next_send_at=None if state in ("completed", "failed") else NOW + timedelta(hours=4),
        attempts=0,
        lease_owner=None,
        lease_expires_at=None,
        last_inbound_at=None,
        last_error=None,
        name=None,
        timezone=None,
        sender=None,
        fields={},
        created_at=NOW,
        updated_at=NOW,
    )


def refusal(c: Conversation, step: int, purpose: str, code: int, attempts: int = 1) -> Refusal:
    return Refusal("wamid.X", 10, step, purpose, attempts, code, "title", c, busy=False)


# (flow, conversation state/step/purpose, refused step/purpose, code, attempts)
#   -> (state, step, purpose, due in seconds or None, requeued)
CASES = [
    # 131047 for a question the conversation still waits on: its template, now
    (
        "asks",
        ("awaiting_reply", 0, "reminder"),
        (0, "question"),
        131047,
        1,
        ("in_progress", 0, "fallback", 0, False),
    ),
    # ... but a step without any template fails
    (
        "asks",
        ("awaiting_reply", 1, "timeout"),
        (1, "question"),
        131047,
        1,
        ("failed", 1, "timeout", None, False),
    ),
    # the template itself refused for the window: fails (never loops)
    (
        "asks",
        ("awaiting_reply", 0, "reminder"),
        (0, "fallback"),
        131047,
        1,
        ("failed", 0, "reminder", None, False),
    ),
    # undeliverable: fails, also while awaiting a reply or after moving on
    (
        "asks",
        ("awaiting_reply", 0, "reminder"),
        (0, "question"),
        131026,
        1,
        ("failed", 0, "reminder", None, False),
    ),
    (
        "asks",
        ("awaiting_reply", 2, "timeout"),
        (0, "question"),
        131026,
        1,
        ("failed", 2, "timeout", None, False),
    ),
    (
        "asks",
        ("awaiting_reply", 0, "timeout"),
        (0, "reminder"),
        131050,
        1,
        ("failed", 0, "timeout", None, False),
    ),
    (
        "tells",
        ("completed", 2, "question"),
        (2, "question"),
        132001,
        1,
        ("failed", 2, "question", None, False),
    ),
    # a refused reminder for the window or a transient error: nothing changes
    ("asks", ("awaiting_reply", 0, "timeout"), (0, "reminder"), 131047, 1, None),
    ("asks", ("awaiting_reply", 0, "timeout"), (0, "reminder"), 131000, 1, None),
    # retryable: the same message again after a backoff, under its own row
    (
        "asks",
        ("awaiting_reply", 0, "reminder"),
        (0, "question"),
        131000,
        1,
        ("in_progress", 0, "question", "later", True),
    ),
    (
        "asks",
        ("awaiting_reply", 0, "reminder"),
        (0, "question"),
        131049,
        2,
        ("in_progress", 0, "question", "later", True),
    ),
    (
        "asks",
        ("awaiting_reply", 0, "reminder"),
        (0, "fallback"),
        131016,
        1,
        ("in_progress", 0, "fallback", "later", True),
    ),
    # ... capped: the message was tried max_attempts (3) times
    (
        "asks",
        ("awaiting_reply", 0, "reminder"),
        (0, "question"),
        131000,
        3,
        ("failed", 0, "reminder", None, False),
    ),
    # moved on past steps that wait for nothing: rewound, completed included
    (
        "tells",
        ("in_progress", 2, "question"),
        (0, "question"),
        131047,
        1,
        ("in_progress", 0, "fallback", 0, False),
    ),
    (
        "tells",
        ("completed", 2, "question"),
        (2, "question"),
        131047,
        1,
        ("in_progress", 2, "fallback", 0, False),
    ),
    (
        "tells",
        ("completed", 2, "question"),
        (1, "question"),
        131000,
        1,
        ("in_progress", 1, "question", "later", True),
    ),
    # moved on because the user answered: the refused step cannot come back
    (
        "asks",
        ("awaiting_reply", 1, "timeout"),
        (0, "question"),
        131047,
        1,
        ("failed", 1, "timeout", None, False),
    ),
    (
        "asks",
        ("awaiting_reply", 2, "timeout"),
        (1, "question"),
        131000,
        1,
        ("failed", 2, "timeout", None, False),
    ),
    # ended by someone's decision or an earlier failure: never changed
    ("asks", ("opted_out", 0, "reminder"), (0, "question"), 131026, 1, None),
    ("asks", ("cancelled", 0, "reminder"), (0, "question"), 131047, 1, None),
    ("asks", ("failed", 0, "reminder"), (0, "question"), 131000, 1, None),
]


@pytest.mark.parametrize(("flow", "now_at", "refused", "code", "attempts", "expect"), CASES)
def test_refusal_table(
    flow: str,
    now_at: tuple[str, int, str],
    refused: tuple[int, str],
    code: int,
    attempts: int,
    expect: tuple[str, int, str, object, bool] | None,
) -> None:
    c = conv(flow, *now_at)
    r = refusal(c, refused[0], refused[1], code, attempts)
    plan = plan_refusals([r], FLOWS, NOW, max_attempts=3, retry_base_s=1.0, retry_cap_s=60.0)
    if expect is None:
        assert plan.changes == {} and plan.requeue == []
        return
    state, step, purpose, due, requeued = expect
    change = plan.changes[c.id]
    assert (change.state, change.step, change.purpose) == (state, step, purpose)
    if due is None:
        assert change.next_send_at is None
    elif due == 0:
        assert change.next_send_at == NOW
    else:
        assert change.next_send_at is not None and change.next_send_at > NOW
    assert plan.requeue == ([10] if requeued else [])
    assert change.last_error is not None
    assert str(code) in change.last_error
    assert "refused by status webhook" in change.last_error


def test_reason_names_step_and_code_and_why_it_moved_on() -> None:
    c = conv("asks", "awaiting_reply", 1, "timeout")
    plan = plan_refusals(
        [refusal(c, 0, "question", 131047)],
        FLOWS,
        NOW,
        max_attempts=3,
        retry_base_s=1.0,
        retry_cap_s=60.0,
    )
    reason = plan.changes[1].last_error or ""
    assert reason.startswith("step 1 (a) question was accepted, then refused")
    assert "moved on to step 2" in reason


def test_two_refusals_of_one_conversation_in_a_batch_end_in_the_worst() -> None:
    c = conv("tells", "completed", 2, "question")
    first = refusal(c, 1, "question", 131047)
    second = Refusal("wamid.Y", 11, 2, "question", 1, 131026, "undeliverable", c, busy=False)
    plan = plan_refusals(
        [second, first], FLOWS, NOW, max_attempts=3, retry_base_s=1.0, retry_cap_s=60.0
    )
    assert plan.changes[1].state == "failed"
    assert "131026" in (plan.changes[1].last_error or "")


@pytest.mark.parametrize("code", [131000, 131047])
def test_a_completed_conversation_enrolled_again_is_not_reopened(code: int) -> None:
    """The same refusals reopen a completed conversation (the table above), unless the
    user is in the flow again: one active conversation per phone and flow, so reopening
    it failed the whole webhook body for good (simulator seed 197). It fails instead."""
    c = conv("tells", "completed", 2, "question")
    r = Refusal("wamid.X", 10, 1, "question", 1, code, "title", c, busy=False, superseded=True)
    plan = plan_refusals([r], FLOWS, NOW, max_attempts=3, retry_base_s=1.0, retry_cap_s=60.0)
    assert plan.changes[1].state == "failed"
    assert plan.requeue == []
    assert "a newer enrollment in the same flow is active" in (plan.changes[1].last_error or "")
