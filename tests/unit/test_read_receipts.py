"""Read receipts, the pure parts: the fake's check of a mark-as-read body (Meta's rules)
and which recorded inbound messages get a receipt."""

from __future__ import annotations

from datetime import UTC, datetime

from dripline.fake.read_receipts import check_read, is_read_request
from dripline.fake.validate import Problem
from dripline.inbox.plan import InboundEvent, InboundPlan
from dripline.inbox.receipts import ReadReceipt, receipts_for
from dripline.store import ConversationChange, NewInbound

NOW = datetime(2026, 3, 1, tzinfo=UTC)
RECEIVED = {"wamid.IN1": ("100", "14155550100")}
READ = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN1"}


def test_a_read_request_is_told_from_a_send() -> None:
    assert is_read_request(READ)
    assert not is_read_request({**READ, "to": "+14155550100"})
    assert not is_read_request({"messaging_product": "whatsapp", "to": "1", "type": "text"})


def test_the_fake_checks_a_read_request_as_meta_does() -> None:
    assert check_read(READ, RECEIVED, "100") == ("100", "14155550100")
    for body, number, code in (
        ({**READ, "message_id": "wamid.NOPE"}, "100", 131009),
        (READ, "200", 131009),  # another number's message
        ({**READ, "status": "delivered"}, "100", 100),
        ({**READ, "messaging_product": "sms"}, "100", 100),
        ({**READ, "message_id": ""}, "100", 100),
    ):
        found = check_read(body, RECEIVED, number)
        assert isinstance(found, Problem) and found.code == code, body


def _change(cid: int) -> ConversationChange:
    return ConversationChange(cid, "in_progress", 1, "question", NOW, 0, None, NOW)


def test_receipts_for_answers_of_flows_that_want_them() -> None:
    plan = InboundPlan(
        inserts=[
            NewInbound("w.answer", 1, "+1", 0, "text", "yes", NOW),
            NewInbound("w.other_flow", 2, "+2", 0, "text", "yes", NOW),
            NewInbound("w.stop", 3, "+3", 0, "opt_out", "STOP", NOW),
            NewInbound("w.nothing", 4, "+4", None, "text", "hi", NOW),
            NewInbound("w.not_applied", 5, "+5", 0, "text", "again", NOW),
            NewInbound("w.unknown", None, "+6", None, "text", "who?", NOW),
        ],
        changes={cid: _change(cid) for cid in (1, 2, 3, 4)},
    )
    events = {"w.answer": InboundEvent("w.answer", "+1", "text", "yes", NOW, number="100")}
    flows = {1: "asks", 2: "silent", 3: "asks", 4: "asks", 5: "asks"}
    got = receipts_for(plan, events, flows, lambda flow: flow == "asks")
    assert got == [ReadReceipt("w.answer", "100")]
