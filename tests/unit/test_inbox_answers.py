"""Replies as typed answers in the inbox plan (plan_inbound), without I/O: what each
kind of reply stores and where it moves the conversation; taps parsed from Meta's
webhook shapes (tests/corpus/webhooks) carry the tapped id."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dripline.flows import load_flows
from dripline.inbox import plan_inbound
from dripline.inbox.plan import InboundEvent, inbound_event
from dripline.store import ConversationChange, NewInbound, PhoneConversations
from dripline.whatsapp.webhooks import parse_webhook
from tests.unit.test_inbox_routing import conv

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "corpus" / "webhooks"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USER = "+5215512345678"
FLOWS = load_flows(REPO / "flows")
SETUP = 1  # free-trial: a yes_no step; yes -> feature (step 2)


def waiting(
    purpose: str = "timeout", step: int = SETUP, state: str = "awaiting_reply"
) -> PhoneConversations:
    row = dataclasses.replace(
        conv(1, None), flow="free-trial", step=step, purpose=purpose, state=state
    )
    return PhoneConversations((row,), False, 1)


def reply(text: str | None, tap: str | None = None, kind: str = "text") -> InboundEvent:
    return InboundEvent("wamid.in", USER, kind, text, NOW, tap_id=tap)


def plan(
    event: InboundEvent, phones: PhoneConversations
) -> tuple[NewInbound, ConversationChange | None]:
    p = plan_inbound([event], {USER: phones}, {(1, SETUP)}, FLOWS, ("STOP",), NOW)
    [inserted] = p.inserts
    return inserted, p.changes.get(1)


@pytest.mark.parametrize(
    ("event", "option"),
    [
        (reply("Yes", "yes", "interactive"), "yes"),  # a reply button
        (reply("No", "no", "button"), "no"),  # a template's quick reply
        (reply("sim"), "yes"),  # typed
    ],
)
def test_a_valid_answer_is_stored_typed_and_moves_on(event: InboundEvent, option: str) -> None:
    inserted, change = plan(event, waiting())
    assert (inserted.step, inserted.answer_kind, inserted.answer_option, inserted.valid) == (
        SETUP,
        "option",
        option,
        True,
    )
    assert change is not None
    assert (change.state, change.step, change.purpose) == ("in_progress", 2, "question")


def test_an_invalid_answer_is_kept_and_re_asked() -> None:
    inserted, change = plan(reply("maybe"), waiting())
    assert (inserted.body, inserted.answer_kind, inserted.answer_option, inserted.valid) == (
        "maybe",
        "option",
        None,
        False,
    )
    assert change is not None
    assert (change.state, change.step, change.purpose, change.next_send_at) == (
        "in_progress",
        SETUP,
        "reask1",
        NOW,
    )


def test_an_invalid_answer_while_a_re_ask_is_due_changes_only_the_window() -> None:
    inserted, change = plan(reply("maybe"), waiting("reask1", state="in_progress"))
    assert inserted.valid is False
    assert change is not None and change.purpose == "reask1"


def test_a_number_answer() -> None:
    event = reply("9/10")
    phones = waiting(step=3)
    p = plan_inbound([event], {USER: phones}, {(1, 3)}, FLOWS, ("STOP",), NOW)
    [inserted] = p.inserts
    assert (inserted.answer_kind, inserted.answer_number, inserted.valid) == ("number", 9.0, True)
    assert p.changes[1].step == 5  # free-trial: 9-10 -> review


def test_a_stop_answers_nothing() -> None:
    inserted, _ = plan(reply("STOP"), waiting())
    assert (inserted.kind, inserted.answer_kind, inserted.valid) == ("opt_out", None, None)


@pytest.mark.parametrize(
    ("name", "kind", "tap"),
    [
        ("interactive_button_reply.json", "interactive", True),
        ("interactive_list_reply.json", "interactive", True),
        ("button.json", "button", True),
        ("text.json", "text", False),
    ],
)
def test_taps_in_metas_shapes_carry_their_id(name: str, kind: str, tap: bool) -> None:
    raw = json.loads((CORPUS / name).read_text())
    [message] = parse_webhook(raw).messages
    event = inbound_event(message, 1, NOW)
    assert event is not None and event.kind == kind
    expected = message.reply_id or message.button_payload if tap else None
    assert event.tap_id == expected and (not tap or event.tap_id)
