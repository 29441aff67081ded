"""Every transition rule: what a flow sends, and where a conversation goes next."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dripline.errors import FlowError
from dripline.flows import (
    TemplateMessage,
    TextMessage,
    Transition,
    YamlFlow,
    load_flows,
    parse_flow_text,
)
from dripline.flows.base import ConversationLike
from dripline.store import Conversation

T0 = datetime(2026, 1, 12, 10, 0, tzinfo=UTC)  # a Monday, 11:00 in Berlin


@dataclass(frozen=True)
class Conv:
    """A plain conversation row, as the webhook has it."""

    id: int = 7
    phone: str = "+4915112345678"  # Germany: Europe/Berlin
    flow: str = "t"
    step: int = 0
    purpose: str = "question"
    state: str = "pending"
    attempts: int = 0
    name: str | None = "Ana"
    timezone: str | None = None
    fields: Mapping[str, Any] | None = field(default_factory=dict)
    last_inbound_at: datetime | None = None


def flow(text: str) -> YamlFlow:
    loaded = parse_flow_text(text, "t.yaml", "t")
    return YamlFlow(loaded.spec, loaded.source)


AFTER_FLOW = flow(
    """
steps:
  - text: "Hi {name}"
  - text: "Two"
    after: 20s
  - text: "Three"
    after: 1h
"""
)

WAIT_FLOW = flow(
    """
fallback: {name: generic_nudge, language: en, body_params: ["{name}"]}
steps:
  - text: "Q1 {name}?"
    wait_for_reply: true
    reply_timeout: 1d
    reminder: {after: 4h, text: "Still there, {name}?"}
  - text: "Q2?"
    after: 10m
    wait_for_reply: true
    reply_timeout: 2h
    on_timeout: continue
    fallback: {name: q2_template, language: de, body_params: ["{name}", "{plan}"]}
  - text: "Q3?"
    after: 1h
    wait_for_reply: true
    reply_timeout: 30m
"""
)


# -- message() -------------------------------------------------------------------------
def test_question_text_with_placeholder() -> None:
    assert AFTER_FLOW.message(Conv(), "question") == TextMessage("Hi Ana")


def test_reminder_message() -> None:
    assert WAIT_FLOW.message(Conv(purpose="reminder"), "reminder") == TextMessage(
        "Still there, Ana?"
    )


def test_fallback_template_rendering_uses_fields() -> None:
    conv = Conv(step=1, fields={"plan": "Pro"})
    assert WAIT_FLOW.message(conv, "fallback") == TemplateMessage(
        name="q2_template", language="de", body_params=("Ana", "Pro")
    )


def test_flow_level_fallback_applies_to_steps_without_one() -> None:
    assert WAIT_FLOW.has_fallback(Conv(step=0))
    assert WAIT_FLOW.message(Conv(step=0), "fallback") == TemplateMessage(
        "generic_nudge", "en", ("Ana",)
    )
    assert not AFTER_FLOW.has_fallback(Conv(step=0))
    assert not AFTER_FLOW.has_fallback(Conv(step=99))


def test_template_as_the_question() -> None:
    f = flow('steps:\n  - template: {name: hello, language: pt_BR, body_params: ["{city}"]}\n')
    assert f.message(Conv(fields={"city": "Recife"}), "question") == TemplateMessage(
        "hello", "pt_BR", ("Recife",)
    )


def test_placeholders_from_phone_fields_and_defaults() -> None:
    f = flow('defaults: {name: there, plan: Basic}\nsteps:\n  - text: "{name} {phone} {plan}"\n')
    assert f.message(Conv(name=None, fields=None), "question") == TextMessage(
        "there +4915112345678 Basic"
    )
    # The conversation's own values win over the defaults.
    assert f.message(Conv(fields={"plan": "Pro"}), "question") == TextMessage(
        "Ana +4915112345678 Pro"
    )


def test_missing_placeholder_names_the_field_and_step() -> None:
    conv = Conv(step=1, fields={})
    with pytest.raises(FlowError, match=r"steps\[1\]\.fallback\.body_params\[1\]") as info:
        WAIT_FLOW.message(conv, "fallback")
    assert "{plan}" in str(info.value)
    assert "conversation 7" in str(info.value)


def test_missing_name_placeholder() -> None:
    with pytest.raises(FlowError, match=r"placeholder \{name\} has no value"):
        AFTER_FLOW.message(Conv(name=None), "question")


def test_message_errors() -> None:
    with pytest.raises(FlowError, match="no reminder"):
        AFTER_FLOW.message(Conv(), "reminder")
    with pytest.raises(FlowError, match="no fallback"):
        AFTER_FLOW.message(Conv(), "fallback")
    with pytest.raises(FlowError, match="nothing to send"):
        AFTER_FLOW.message(Conv(), "timeout")
    with pytest.raises(FlowError, match="at step 5, but the flow has 3 steps"):
        AFTER_FLOW.message(Conv(step=5), "question")


# -- after_send() ----------------------------------------------------------------------
def test_after_timing_moves_to_the_next_step() -> None:
    t = AFTER_FLOW.after_send(Conv(), "question", T0)
    assert t == Transition("in_progress", 1, "question", T0 + timedelta(seconds=20))
    t = AFTER_FLOW.after_send(Conv(step=1, state="in_progress"), "question", T0)
    assert t == Transition("in_progress", 2, "question", T0 + timedelta(hours=1))


def test_last_step_without_reply_completes() -> None:
    t = AFTER_FLOW.after_send(Conv(step=2, state="in_progress"), "question", T0)
    assert t.state == "completed"
    assert t.next_send_at is None
    assert t.note is None


def test_wait_for_reply_with_reminder_schedules_the_reminder() -> None:
    t = WAIT_FLOW.after_send(Conv(), "question", T0)
    assert t == Transition("awaiting_reply", 0, "reminder", T0 + timedelta(hours=4))


def test_wait_for_reply_without_reminder_schedules_the_timeout() -> None:
    t = WAIT_FLOW.after_send(Conv(step=1, state="in_progress"), "question", T0)
    assert t == Transition("awaiting_reply", 1, "timeout", T0 + timedelta(hours=2))


def test_after_the_reminder_the_timeout_counts_from_the_question() -> None:
    reminder_sent = T0 + timedelta(hours=4)
    conv = Conv(state="awaiting_reply", purpose="reminder")
    t = WAIT_FLOW.after_send(conv, "reminder", reminder_sent)
    # reply_timeout 1d from the question = 20h after an on-time reminder.
    assert t == Transition("awaiting_reply", 0, "timeout", T0 + timedelta(days=1))


def test_a_late_reminder_never_shortens_the_time_after_it() -> None:
    late = T0 + timedelta(hours=10)
    conv = Conv(state="awaiting_reply", purpose="reminder")
    t = WAIT_FLOW.after_send(conv, "reminder", late)
    assert t.next_send_at == late + timedelta(hours=20)


def test_fallback_behaves_like_the_question_it_replaces() -> None:
    conv = Conv(purpose="question")
    assert WAIT_FLOW.after_send(conv, "fallback", T0) == WAIT_FLOW.after_send(conv, "question", T0)
    # Also when the dispatcher stored the fallback as the due purpose.
    stored = dataclasses.replace(conv, purpose="fallback")
    assert WAIT_FLOW.after_send(stored, "fallback", T0) == WAIT_FLOW.after_send(
        conv, "question", T0
    )


def test_fallback_for_a_refused_reminder_behaves_like_the_reminder() -> None:
    conv = Conv(state="awaiting_reply", purpose="reminder")
    assert WAIT_FLOW.after_send(conv, "fallback", T0) == WAIT_FLOW.after_send(conv, "reminder", T0)


def test_after_send_rejects_what_is_never_sent() -> None:
    with pytest.raises(FlowError, match="nothing is sent"):
        WAIT_FLOW.after_send(Conv(), "timeout", T0)
    with pytest.raises(FlowError, match="has none"):
        AFTER_FLOW.after_send(Conv(), "reminder", T0)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        AFTER_FLOW.after_send(Conv(), "question", datetime(2026, 1, 1))


# -- on_timeout() ----------------------------------------------------------------------
def test_timeout_end_completes_with_a_note() -> None:
    conv = Conv(step=0, state="awaiting_reply", purpose="timeout")
    t = WAIT_FLOW.on_timeout(conv, T0)
    assert t.state == "completed"
    assert t.next_send_at is None
    assert t.note == "no reply to step 1 (q1) within 1d"


def test_timeout_continue_moves_on_as_if_answered() -> None:
    conv = Conv(step=1, state="awaiting_reply", purpose="timeout")
    assert WAIT_FLOW.on_timeout(conv, T0) == Transition(
        "in_progress", 2, "question", T0 + timedelta(hours=1)
    )
    assert WAIT_FLOW.on_timeout(conv, T0) == WAIT_FLOW.on_reply(conv, "ok", T0)


def test_timeout_continue_on_the_last_step_completes() -> None:
    f = flow(
        "steps:\n  - text: q\n    wait_for_reply: true\n    reply_timeout: 1h\n"
        "    on_timeout: continue\n"
    )
    t = f.on_timeout(Conv(state="awaiting_reply", purpose="timeout"), T0)
    assert (t.state, t.next_send_at, t.note) == ("completed", None, None)


# -- on_reply() ------------------------------------------------------------------------
def test_reply_schedules_the_next_step_after_its_delay() -> None:
    conv = Conv(step=0, state="awaiting_reply", purpose="reminder")
    assert WAIT_FLOW.on_reply(conv, "yes", T0) == Transition(
        "in_progress", 1, "question", T0 + timedelta(minutes=10)
    )


def test_reply_to_the_last_step_completes() -> None:
    conv = Conv(step=2, state="awaiting_reply", purpose="timeout")
    t = WAIT_FLOW.on_reply(conv, "ok", T0)
    assert (t.state, t.step, t.next_send_at) == ("completed", 2, None)


def test_reply_while_in_progress_advances_too() -> None:
    # The answer can beat the dispatcher's write of awaiting_reply.
    conv = Conv(step=0, state="in_progress")
    assert WAIT_FLOW.on_reply(conv, "yes", T0).step == 1


@pytest.mark.parametrize("state", ["completed", "failed", "opted_out"])
def test_reply_to_a_finished_conversation_is_an_error(state: str) -> None:
    with pytest.raises(FlowError, match=f"is {state}"):
        WAIT_FLOW.on_reply(Conv(state=state), "hi", T0)


# -- quiet hours in transitions ----------------------------------------------------------
QUIET_FLOW = flow(
    """
quiet_hours: {start: "21:00", end: "08:00"}
steps:
  - text: one
    wait_for_reply: true
    reply_timeout: 12h
    reminder: {after: 10h, text: nudge}
  - text: two
    after: 2h
  - text: three
    after: 2h
    quiet_hours: off
  - text: four
    after: 1h
    quiet_hours: {start: "12:00", end: "13:00"}
"""
)
EVENING = datetime(2026, 1, 12, 18, 30, tzinfo=UTC)  # 19:30 in Berlin


def test_next_send_at_shows_the_real_send_time() -> None:
    # 18:30 UTC + 2h = 21:30 Berlin: quiet until 08:00 Berlin = 07:00 UTC.
    conv = Conv(step=0, state="awaiting_reply")
    t = QUIET_FLOW.on_reply(conv, "hi", EVENING)
    assert t == Transition("in_progress", 1, "question", datetime(2026, 1, 13, 7, tzinfo=UTC))


def test_a_reminder_is_held_by_quiet_hours_but_a_timeout_is_not() -> None:
    t = QUIET_FLOW.after_send(Conv(), "question", EVENING)
    assert t.purpose == "reminder"
    assert t.next_send_at == datetime(2026, 1, 13, 7, tzinfo=UTC)  # not 04:30 UTC
    t = QUIET_FLOW.after_send(Conv(state="awaiting_reply", purpose="reminder"), "reminder", T0)
    assert t.next_send_at == T0 + timedelta(hours=2)


def test_the_time_zone_of_the_conversation_wins() -> None:
    conv = Conv(step=0, state="awaiting_reply", timezone="America/New_York")
    # 20:30 UTC = 15:30 in New York: not quiet.
    t = QUIET_FLOW.on_reply(conv, "hi", EVENING)
    assert t.next_send_at == EVENING + timedelta(hours=2)


def test_step_override_switches_quiet_hours_off() -> None:
    conv = Conv(step=1, state="in_progress")
    t = QUIET_FLOW.after_send(conv, "question", EVENING)
    assert t.next_send_at == EVENING + timedelta(hours=2)  # 21:30 Berlin, still sent


def test_step_override_with_its_own_window() -> None:
    conv = Conv(step=2, state="in_progress")
    # 10:30 UTC + 1h = 12:30 Berlin: the step's lunch window holds it until 13:00 = 12:00 UTC.
    t = QUIET_FLOW.after_send(conv, "question", datetime(2026, 1, 12, 10, 30, tzinfo=UTC))
    assert t.next_send_at == datetime(2026, 1, 12, 12, tzinfo=UTC)


def test_quiet_until() -> None:
    night = datetime(2026, 1, 12, 22, 0, tzinfo=UTC)  # 23:00 Berlin
    assert QUIET_FLOW.quiet_until(Conv(), night) == datetime(2026, 1, 13, 7, tzinfo=UTC)
    assert QUIET_FLOW.quiet_until(Conv(), T0) is None
    assert QUIET_FLOW.quiet_until(Conv(step=2), night) is None  # quiet_hours: off
    assert AFTER_FLOW.quiet_until(Conv(), night) is None  # no quiet hours at all
    assert QUIET_FLOW.quiet_until(Conv(step=42), night) is None


def test_quiet_hours_across_the_dst_change() -> None:
    # Sent 18:00 UTC on Saturday 2026-03-28 (19:00 CET); +2h = 21:00 CET: quiet. The
    # window ends at 08:00 CEST on Sunday, after the clocks jumped: 06:00 UTC.
    conv = Conv(step=0, state="awaiting_reply")
    t = QUIET_FLOW.on_reply(conv, "hi", datetime(2026, 3, 28, 18, tzinfo=UTC))
    assert t.next_send_at == datetime(2026, 3, 29, 6, tzinfo=UTC)


# -- the protocol and the built-in -------------------------------------------------------
def test_claimed_conversations_are_accepted() -> None:
    claimed = Conversation(
        id=1,
        phone="+4915112345678",
        flow="demo",
        step=0,
        purpose="question",
        state="pending",
        next_send_at=T0,
        attempts=0,
        lease_owner="w",
        lease_expires_at=T0,
        last_inbound_at=None,
        last_error=None,
        name=None,
        timezone=None,
        sender=None,
        fields={},
        created_at=T0,
        updated_at=T0,
    )
    conv: ConversationLike = claimed
    demo = load_flows(None).get("demo")
    assert demo.message(conv, "question") == TextMessage(
        "Hi there! This is the dripline demo: three messages in all."
    )


def test_demo_runs_through_its_three_steps() -> None:
    demo = load_flows(None).get("demo")
    conv = Conv(flow="demo", phone="+18005550100")
    at = T0
    for _ in range(3):
        demo.message(conv, "question")
        t = demo.after_send(conv, "question", at)
        if t.state == "completed":
            break
        assert t.next_send_at is not None
        at = t.next_send_at
        conv = dataclasses.replace(conv, step=t.step, state=t.state, purpose=t.purpose)
    assert t.state == "completed"
    assert at - T0 == timedelta(minutes=70)


def test_questions_for_the_export() -> None:
    f = flow("steps:\n  - {text: a, id: first, title: First}\n  - {text: bb, after: 1m}\n")
    assert [(q.index, q.id, q.title, q.expects_reply) for q in f.questions()] == [
        (0, "first", "First", False),
        (1, "q2", "bb", False),
    ]
    assert [q.id for q in WAIT_FLOW.questions()] == ["q1", "q2", "q3"]
    assert WAIT_FLOW.questions()[0].expects_reply
    assert WAIT_FLOW.expects_reply(Conv())
    assert not AFTER_FLOW.expects_reply(Conv())
