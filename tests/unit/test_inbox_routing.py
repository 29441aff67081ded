"""Which of a user's conversations an inbound message is for (plan_inbound), without I/O:
the business number it was sent to, and the suppressions a STOP records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dripline.flows import load_flows
from dripline.inbox import plan_inbound
from dripline.inbox.plan import InboundEvent
from dripline.store import Conversation, PhoneConversations

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
A, B = "111", "222"
USER = "+5215512345678"  # the WhatsApp ID Meta reports for +525512345678


def conv(cid: int, sender: str | None) -> Conversation:
    return Conversation(
        id=cid,
        phone="+525512345678",
        flow="demo",
        step=0,
        purpose="question",
        state="pending",
        next_send_at=NOW,
        attempts=0,
        lease_owner=None,
        lease_expires_at=None,
        last_inbound_at=None,
        last_error=None,
        name=None,
        timezone=None,
        sender=sender,
        fields={},
        created_at=NOW,
        updated_at=NOW,
        wa_id=USER[1:],
    )


def stop(number: str | None) -> InboundEvent:
    return InboundEvent("wamid.in", USER, "text", "STOP", NOW, number=number)


@pytest.mark.parametrize(
    ("number", "default", "stopped", "suppressed"),
    [
        # Sent to B: the conversation sent from B (here: the default number) only.
        (B, B, {2}, {(B, USER), (B, "+525512345678")}),
        (A, B, {1}, {(A, USER), (A, "+525512345678")}),
        # A number none of them is on (a webhook for a number we do not know): all.
        ("999", B, {1, 2}, {("999", USER), ("999", "+525512345678")}),
        # No number in the webhook: all, each suppressed for its own sender.
        (None, B, {1, 2}, {(B, USER), (A, "+525512345678"), (B, "+525512345678")}),
        # The default number unknown: a conversation without a sender may be on any.
        (A, None, {1, 2}, {(A, USER), (A, "+525512345678")}),
    ],
)
def test_a_stop_is_for_the_conversations_on_the_number_it_was_sent_to(
    number: str | None,
    default: str | None,
    stopped: set[int],
    suppressed: set[tuple[str, str]],
) -> None:
    rows = (conv(1, A), conv(2, None))
    phones = {USER: PhoneConversations(rows, False, 2)}
    plan = plan_inbound(
        [stop(number)], phones, set(), load_flows(None), ("STOP",), NOW, default_sender=default
    )
    assert {i for i, ch in plan.changes.items() if ch.state == "opted_out"} == stopped
    assert {(s.sender, s.phone) for s in plan.suppressions} == suppressed


def test_a_stop_from_a_stranger_is_suppressed_for_the_number_it_was_sent_to() -> None:
    phones = {USER: PhoneConversations((), False, None)}
    plan = plan_inbound([stop(A)], phones, set(), load_flows(None), ("STOP",), NOW)
    assert [(s.sender, s.phone) for s in plan.suppressions] == [(A, USER)]
    assert plan.unknown_sender == 1 and not plan.changes
