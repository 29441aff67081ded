"""The store contract: the suppression list (numbers that opted out), on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dripline.errors import SuppressedError
from dripline.store import Enrollment, Store, Suppression

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
A, B = "100000000000001", "100000000000002"


async def suppress(store: Store, *rows: Suppression) -> int:
    async with store.webhook_transaction() as tx:
        return await tx.add_suppressions(list(rows))


def stop(sender: str, phone: str, at: datetime = NOW) -> Suppression:
    return Suppression(sender, phone, "the user sent 'STOP'", at)


async def test_added_once_the_first_opt_out_stays(store: Store) -> None:
    assert await suppress(store, stop(A, "+14155550123"), stop(A, "+14155550123")) == 1
    assert await suppress(store, stop(A, "+14155550123", NOW + timedelta(days=1))) == 0
    assert await suppress(store, stop(B, "+14155550123")) == 1
    assert await suppress(store) == 0
    assert (await store.snapshot()).suppressions == (
        stop(A, "+14155550123"),
        stop(B, "+14155550123"),
    )


async def test_enrolling_a_suppressed_number_is_refused_and_writes_nothing(store: Store) -> None:
    await suppress(store, stop(A, "+553188887777"))  # the STOP came from the WhatsApp ID
    items = [Enrollment("+14155550001", "f"), Enrollment("+5531988887777", "f", sender=A)]
    with pytest.raises(SuppressedError) as caught:
        await store.enroll(items, NOW)
    assert caught.value.index == 1 and caught.value.phone == "+5531988887777"
    snap = await store.snapshot()
    assert snap.conversations == () and len(snap.suppressions) == 1
    # Another business number's opt-out does not stop it.
    [res] = await store.enroll([Enrollment("+5531988887777", "f", sender=B)], NOW)
    assert res.created


async def test_a_new_opt_in_lifts_the_suppression(store: Store) -> None:
    await suppress(store, stop(A, "+525512345678"), stop(B, "+5215512345678"))
    [res] = await store.enroll([Enrollment("+525512345678", "f", opt_in=True)], NOW)
    assert res.created
    assert (await store.snapshot()).suppressions == ()
    # Lifted for good: enrolling again (without opt_in) is no longer refused.
    [again] = await store.enroll([Enrollment("+525512345678", "g")], NOW)
    assert again.created
