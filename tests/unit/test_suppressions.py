"""Suppressions: which opt-outs stop an enrollment, and the opt-outs status webhooks
report (pure parts)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dripline.errors import SuppressedError
from dripline.inbox.optouts import suppressions_from_statuses
from dripline.store import Enrollment, Suppression
from dripline.store.identity import blocking, lifted_suppressions
from dripline.whatsapp.webhook_types import StatusEvent, WebhookErrorInfo

NOW = datetime(2026, 3, 1, tzinfo=UTC)
A, B = "111", "222"


def sup(sender: str, phone: str) -> Suppression:
    return Suppression(sender, phone, "the user sent 'STOP'", NOW)


@pytest.mark.parametrize(
    ("item", "rows", "blocked"),
    [
        # The number itself, for the item's business number.
        (Enrollment("+14155550123", "f", sender=A), [sup(A, "+14155550123")], 1),
        # Another business number's opt-out does not stop this one.
        (Enrollment("+14155550123", "f", sender=A), [sup(B, "+14155550123")], 0),
        # Sent from the default number (unknown to the store): any of ours stops it.
        (Enrollment("+14155550123", "f"), [sup(B, "+14155550123")], 1),
        # Recorded without a known business number: stops every sender.
        (Enrollment("+14155550123", "f", sender=A), [sup("", "+14155550123")], 1),
        # The STOP came from the WhatsApp ID Meta reported (no ninth digit, 521).
        (Enrollment("+5531988887777", "f"), [sup(A, "+553188887777")], 1),
        (Enrollment("+525512345678", "f"), [sup(A, "+5215512345678")], 1),
        # Someone else.
        (Enrollment("+14155550123", "f"), [sup(A, "+14155550124")], 0),
    ],
)
def test_blocking(item: Enrollment, rows: list[Suppression], blocked: int) -> None:
    assert len(blocking(item, rows)) == blocked


def test_an_item_without_opt_in_is_refused_naming_its_index() -> None:
    items = [Enrollment("+14155550001", "f"), Enrollment("+14155550123", "f")]
    with pytest.raises(SuppressedError) as caught:
        lifted_suppressions(items, [sup(A, "+14155550123")])
    assert caught.value.index == 1 and caught.value.phone == "+14155550123"
    message = str(caught.value.at("body[1].phone"))
    assert message.startswith("body[1].phone: +14155550123 opted out of messages from number 111")
    assert "2026-03-01" in message and "STOP" in message and "opt_in" in message
    assert "\n" not in message


def test_a_new_opt_in_lifts_what_blocks_it() -> None:
    rows = [sup(A, "+553188887777"), sup(B, "+5531988887777"), sup(A, "+14155550000")]
    items = [Enrollment("+5531988887777", "f", opt_in=True), Enrollment("+14155550001", "f")]
    assert lifted_suppressions(items, rows) == [rows[0], rows[1]]


def status(code: int | None, recipient: str = "5215512345678", st: str = "failed") -> StatusEvent:
    errors = (WebhookErrorInfo(code=code, title="x"),) if code is not None else ()
    return StatusEvent(
        id="wamid.1",
        status=st,
        timestamp=1,
        recipient_id=recipient,
        errors=errors,
        phone_number_id=A,
    )


def test_131050_failed_statuses_become_suppressions() -> None:
    events = [
        status(131050),
        status(131050),  # a redelivery: one row
        status(131026),  # undeliverable is not an opt-out
        status(None, st="delivered"),
        status(131050, recipient=""),  # a username-only user: no number to suppress
    ]
    assert suppressions_from_statuses(events, NOW) == [
        Suppression(A, "+5215512345678", "131050: the user stopped marketing messages", NOW)
    ]
