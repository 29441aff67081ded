"""Several sender numbers, without I/O: which numbers are configured (settings), which one
a new conversation sends from (resolve_sender), and that a reply to one number neither
moves nor opens the window of a conversation on another (plan_inbound)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from dripline.dispatcher.pacing import SenderPacing
from dripline.dispatcher.senderqueue import SCAN_LIMIT, first_ready
from dripline.errors import ConfigError, InputError
from dripline.flows import load_flows
from dripline.inbox import plan_inbound
from dripline.inbox.plan import InboundEvent
from dripline.metrics_senders import SenderCollector
from dripline.senders import resolve_sender
from dripline.settings import load_settings
from dripline.status_report import sender_rows
from dripline.store import PhoneConversations
from tests.unit.test_inbox_routing import NOW, USER, conv

A, B = "111", "222"


def test_senders_from_the_short_form_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIPLINE_SENDERS", "222:300, 333")
    s = load_settings(whatsapp_phone_number_id="111")
    assert s.sender_ids == ("111", "222", "333")
    assert s.sender_rate("222") == 300
    assert s.sender_rate("333") is None  # its tier decides
    monkeypatch.setenv("DRIPLINE_SENDERS", '[{"id": "222", "rate_per_s": 700}]')
    assert load_settings().sender_rate("222") == 700
    # A global rate set by the operator applies per number without its own.
    assert load_settings(rate_per_s=50).sender_rate("999") == 50


@pytest.mark.parametrize("raw", ["12a:3", "222:fast", '[{"id": "1", "rate": 2}]', "222:-1"])
def test_bad_senders_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("DRIPLINE_SENDERS", raw)
    with pytest.raises(ConfigError, match="senders"):
        load_settings()


@pytest.mark.parametrize(
    ("requested", "flow", "stored"),
    [
        (None, None, None),  # the default: stored as NULL
        (A, None, None),  # the default named explicitly: NULL too
        (B, None, B),
        (None, B, B),  # the flow's
        (A, B, None),  # the enrollment's wins over the flow's
    ],
)
def test_resolve_sender(requested: str | None, flow: str | None, stored: str | None) -> None:
    assert resolve_sender(requested, flow, A, (A, B)) == stored


def test_an_unknown_sender_names_the_field() -> None:
    with pytest.raises(InputError, match=r"^body\[2\]\.sender: '999' is not a configured"):
        resolve_sender("999", None, A, (A, B), where="body[2].sender")
    with pytest.raises(InputError, match="the flow's sender '999'"):
        resolve_sender(None, "999", A, (A, B))


def reply(number: str, at: datetime = NOW) -> InboundEvent:
    return InboundEvent(f"wamid.{number}", USER, "text", "yes", at, number=number)


def test_a_reply_to_one_of_our_numbers_leaves_the_other_numbers_conversation_alone() -> None:
    """The user is only in a flow on A and writes to B (also ours): A's conversation is
    neither advanced nor given an open window (the window is per business number)."""
    rows = (replace(conv(1, A), state="awaiting_reply"),)
    phones = {USER: PhoneConversations(rows, False, 1)}
    plan = plan_inbound(
        [reply(B)],
        phones,
        {(1, 0)},
        load_flows(None),
        ("STOP",),
        NOW,
        default_sender=A,
        senders=frozenset({A, B}),
    )
    assert plan.changes == {}
    assert [(i.conversation_id, i.sender) for i in plan.inserts] == [(1, B)]


def test_replies_on_two_numbers_each_reach_their_conversation() -> None:
    rows = (
        replace(conv(1, None), state="awaiting_reply"),  # on the default number, A
        replace(conv(2, B), flow="demo", state="awaiting_reply", updated_at=NOW + timedelta(1)),
    )
    phones = {USER: PhoneConversations(rows, False, 2)}
    later = NOW + timedelta(minutes=1)
    plan = plan_inbound(
        [reply(A), reply(B, later)],
        phones,
        {(1, 0), (2, 0)},
        load_flows(None),
        ("STOP",),
        NOW,
        default_sender=A,
        senders=frozenset({A, B}),
    )
    assert {i.wamid: (i.conversation_id, i.sender) for i in plan.inserts} == {
        f"wamid.{A}": (1, None),  # the default number is stored as NULL
        f"wamid.{B}": (2, B),
    }
    assert plan.changes[1].last_inbound_at == NOW
    assert plan.changes[2].last_inbound_at == later


def test_each_number_has_its_own_rate_split_between_workers() -> None:
    pacing = SenderPacing(80.0)
    pacing.set_number_rate(B, 700.0)
    assert (pacing.rate_of(A), pacing.rate_of(B)) == (80.0, 700.0)
    pacing.set_share(40.0, workers=2)
    assert (pacing.rate_of(A), pacing.rate_of(B)) == (40.0, 350.0)
    assert pacing.total_ceiling([A, B, B]) == 390.0
    # A throttle slows and pauses its own number only.
    event = pacing.on_throttle(B, 0.0, None, random.Random(1))
    assert event.new_event and pacing.rate_of(B) < 350.0
    assert pacing.rate_of(A) == 40.0 and pacing.peek(A, 0.0) == 0.0
    assert pacing.peek(B, 0.0) > 0.0
    pacing.on_accept(A)
    pacing.on_error(A)
    snap = pacing.snapshot()
    assert snap[A] | {"current_per_s": 0} == {
        "rate_per_s": 80.0,
        "current_per_s": 0,
        "sent": 1,
        "throttled": 0,
        "errors": 1,
    }
    assert snap[B]["rate_per_s"] == 700.0 and snap[B]["throttled"] == 1


def test_status_adds_up_each_number_over_the_workers() -> None:
    def worker(a_sent: int, b_errors: int) -> dict[str, object]:
        row = {"rate_per_s": 300.0, "current_per_s": 150.0, "throttled": 1}
        return {
            "stats": {
                "senders": {
                    A: row | {"sent": a_sent, "errors": 0},
                    B: row | {"rate_per_s": 700.0, "sent": 5, "errors": b_errors},
                }
            }
        }

    rows = sender_rows([worker(10, 0), worker(20, 2), {"stats": {}}])
    assert rows == [
        {
            "sender": A,
            "rate_per_s": 300.0,
            "current_per_s": 300.0,
            "sent": 30,
            "throttled": 2,
            "errors": 0,
        },
        {
            "sender": B,
            "rate_per_s": 700.0,
            "current_per_s": 300.0,
            "sent": 10,
            "throttled": 2,
            "errors": 2,
        },
    ]


def test_metrics_are_labelled_by_sender_number() -> None:
    registry = CollectorRegistry()
    pacing = SenderPacing(80.0)
    pacing.set_number_rate(B, 700.0)
    pacing.on_accept(B)
    pacing.on_throttle(A, 0.0, None, random.Random(1))
    registry.register(SenderCollector(pacing.snapshot))
    assert registry.get_sample_value("dripline_sender_sent_total", {"sender": B}) == 1
    assert registry.get_sample_value("dripline_sender_throttled_total", {"sender": A}) == 1
    assert registry.get_sample_value("dripline_sender_rate_per_second", {"sender": B}) == 700


def test_a_number_waiting_for_its_token_does_not_hold_back_another() -> None:
    queue = [A, A, B, A, B]
    assert first_ready(queue, str, lambda k: k == B, numbers=2) == 2
    assert first_ready(queue, str, lambda k: k == A, numbers=2) == 0
    # Every number seen waiting: the scan stops there (it never walks the whole queue).
    seen: list[str] = []

    def never(key: str) -> bool:
        seen.append(key)
        return False

    assert first_ready(queue, str, never, numbers=2) is None
    assert seen == [A, B]
    assert first_ready([A] * (SCAN_LIMIT + 5) + [B], str, lambda k: k == B, numbers=3) is None
