"""Which WhatsApp IDs statuses teach (`dripline.inbox.recipients`), decided without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dripline.inbox.plan import status_update
from dripline.inbox.recipients import usable_wa_id, wa_ids_to_learn
from dripline.store import StatusUpdate
from dripline.whatsapp.webhooks import StatusEvent

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def u(wamid: str, status: str = "sent", recipient: str | None = "553188880000") -> StatusUpdate:
    return StatusUpdate(wamid, status, NOW, recipient_id=recipient)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("553188880000", "553188880000"),
        (" +14155550123 ", "14155550123"),
        ("", None),  # absent: a username-only user
        (None, None),
        ("US.13491208655302741918", None),  # a business-scoped user id, not an ID
        ("123", None),
        ("1" * 16, None),
        ("١٢٣٤٥٦", None),  # digits, but not ASCII ones
    ],
)
def test_usable_wa_id(raw: str | None, expected: str | None) -> None:
    assert usable_wa_id(raw) == expected


def test_a_parsed_status_carries_its_usable_recipient_id() -> None:
    event = StatusEvent(
        id="wamid.1", status="delivered", timestamp=0, recipient_id="+5215512340000"
    )
    assert status_update(event, NOW) == StatusUpdate(
        "wamid.1", "delivered", NOW, recipient_id="5215512340000"
    )
    bsuid = StatusEvent(id="wamid.2", status="sent", timestamp=0, recipient_user_id="US.1349")
    update = status_update(bsuid, NOW)
    assert update is not None and update.recipient_id is None


def test_an_accepted_status_teaches_a_conversation_without_an_id() -> None:
    matched = {"w1": (1, None), "w2": (2, "14155550123"), "w3": (3, None)}
    learn = wa_ids_to_learn([u("w1"), u("w2"), u("w3", "read", "14155550999")], matched)
    # Conversation 2 knows its ID already: never overwritten.
    assert learn == {1: "553188880000", 3: "14155550999"}


def test_failed_unmatched_or_idless_statuses_teach_nothing() -> None:
    matched = {"w1": (1, None), "w2": (2, None)}
    updates = [u("w1", "failed"), u("w2", recipient=None), u("w9")]  # w9 matched nothing
    assert wa_ids_to_learn(updates, matched) == {}


def test_a_batch_that_disagrees_about_a_conversation_teaches_it_nothing() -> None:
    matched = {"w1": (1, None), "w2": (1, None), "w3": (2, None), "w4": (2, None)}
    updates = [u("w1"), u("w2", recipient="5531988880000"), u("w3"), u("w4", "delivered")]
    assert wa_ids_to_learn(updates, matched) == {2: "553188880000"}
