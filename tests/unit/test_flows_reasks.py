"""Choice questions as sent, typed answers moving a conversation, re-asks and branches."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from dripline.flows import ChoiceRow, InteractiveMessage, TemplateButton, TemplateMessage, YamlFlow
from dripline.flows.answers import Answer, Reply
from dripline.flows.loader import parse_flow_text
from dripline.flows.purposes import is_reask, is_timeout, reask, reasks_sent, timeout_after
from dripline.whatsapp.payloads import interactive_payload
from tests.unit.test_flows_transitions import Conv

T0 = datetime(2026, 1, 12, 10, 0, tzinfo=UTC)

FLOW = """
name: t
fallback: {name: shared, language: en_US}
steps:
  - id: ok
    text: "All good, {name}?"
    kind: yes_no
    wait_for_reply: true
    reply_timeout: 1d
    on_invalid: {on_invalid}
    fallback: {name: own, language: en_US}
    next: {yes: bye, no: why}
  - id: pick
    text: "Which?"
    kind: choice
    list_button: Choose one
    options:
      - {id: a, title: A, description: "The first"}
      - {id: b, title: B}
      - {id: c, title: C}
      - {id: d, title: D}
    wait_for_reply: true
    reply_timeout: 1d
  - {id: why, text: "Why?", wait_for_reply: true, reply_timeout: 1d}
  - {id: bye, text: "Bye"}
"""


def make(on_invalid: str = "wait") -> YamlFlow:
    loaded = parse_flow_text(FLOW.replace("{on_invalid}", on_invalid), "t.yaml", "t")
    return YamlFlow(loaded.spec, loaded.source)


WAITING = Conv(state="awaiting_reply", purpose="timeout")


def test_yes_no_goes_as_two_reply_buttons() -> None:
    message = make().message(Conv(), "question")
    assert message == InteractiveMessage(
        "All good, Ana?", (ChoiceRow("yes", "Yes"), ChoiceRow("no", "No")), "button", "Choose"
    )
    assert interactive_payload("+4915112345678", message, callback_data="9") == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+4915112345678",
        "type": "interactive",
        "biz_opaque_callback_data": "9",
        "interactive": {
            "type": "button",
            "body": {"text": "All good, Ana?"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                    {"type": "reply", "reply": {"id": "no", "title": "No"}},
                ]
            },
        },
    }


def test_four_options_go_as_a_list() -> None:
    message = make().message(Conv(step=1), "question")
    assert isinstance(message, InteractiveMessage) and message.style == "list"
    payload = interactive_payload("+1", message)["interactive"]
    assert payload["action"]["button"] == "Choose one"
    assert payload["action"]["sections"][0]["rows"][0] == {
        "id": "a",
        "title": "A",
        "description": "The first",
    }
    assert "description" not in payload["action"]["sections"][0]["rows"][1]


def test_the_steps_own_template_carries_quick_replies_with_the_option_ids() -> None:
    flow = make()
    assert flow.message(Conv(), "fallback") == TemplateMessage(
        "own",
        "en_US",
        buttons=(TemplateButton(0, "quick_reply", "yes"), TemplateButton(1, "quick_reply", "no")),
    )
    # The flow's shared template has no buttons for the step's options.
    assert flow.message(Conv(step=1), "fallback") == TemplateMessage("shared", "en_US")


def test_a_valid_answer_follows_its_branch() -> None:
    flow = make()
    yes = flow.on_answer(WAITING, flow.answer(WAITING, Reply("Yes", "yes")), T0)
    no = flow.on_answer(WAITING, flow.answer(WAITING, Reply("não")), T0)
    assert yes is not None and no is not None
    assert (yes.state, yes.step, yes.purpose, yes.next_send_at) == (
        "in_progress",
        3,
        "question",
        T0,
    )
    assert (no.step, no.purpose) == (2, "question")


def test_invalid_answers_are_re_asked_then_on_invalid_waits() -> None:
    flow = make()
    bad = flow.answer(WAITING, Reply("maybe"))
    assert bad == Answer("option", False, text="maybe")
    first = flow.on_answer(WAITING, bad, T0)
    assert first is not None
    assert (first.state, first.step, first.purpose, first.next_send_at) == (
        "in_progress",
        0,
        "reask1",
        T0,
    )
    pending = replace(WAITING, state="in_progress", purpose="reask1")
    # Another invalid answer before the re-ask went out earns no second one.
    assert flow.on_answer(pending, bad, T0) is None
    # The re-ask repeats the buttons with its own text; the timeout starts over.
    message = flow.message(pending, "reask1")
    assert isinstance(message, InteractiveMessage) and message.body.startswith("Sorry")
    sent = flow.after_send(pending, "reask1", T0)
    assert (sent.state, sent.purpose, sent.next_send_at) == (
        "awaiting_reply",
        "timeout1",
        T0 + timedelta(days=1),
    )
    again = flow.on_answer(replace(WAITING, purpose="timeout1"), bad, T0)
    assert again is not None and again.purpose == "reask2"
    # max_reasks (2) re-asks went out: on_invalid: wait changes nothing.
    assert flow.on_answer(replace(WAITING, purpose="timeout2"), bad, T0) is None
    # A timeout after re-asks is still the step's timeout.
    done = flow.on_timeout(replace(WAITING, purpose="timeout2"), T0)
    assert done.state == "completed" and "no reply to step 1" in (done.note or "")


@pytest.mark.parametrize(
    ("on_invalid", "state", "step"), [("continue", "in_progress", 1), ("end", "completed", 0)]
)
def test_on_invalid_after_the_last_re_ask(on_invalid: str, state: str, step: int) -> None:
    flow = make(on_invalid)
    t = flow.on_answer(replace(WAITING, purpose="timeout2"), flow.answer(WAITING, Reply("?")), T0)
    assert t is not None and (t.state, t.step) == (state, step)
    if on_invalid == "end":
        assert t.note == "no valid answer to step 1 (ok) after 2 re-ask(s)"


def test_purposes() -> None:
    assert [reask(1), timeout_after(0), timeout_after(2)] == ["reask1", "timeout", "timeout2"]
    assert is_reask("reask3") and not is_reask("reminder") and not is_reask("reask")
    assert is_timeout("timeout") and is_timeout("timeout2") and not is_timeout("timeouts")
    assert [reasks_sent(p) for p in ("question", "reminder", "reask1", "timeout1", "reask2")] == [
        0,
        0,
        0,
        1,
        1,
    ]
    assert all(len(reask(k)) <= 16 for k in range(1, 6))
