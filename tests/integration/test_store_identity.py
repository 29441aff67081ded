"""The store contract: recipient identity (the WhatsApp ID a send response reports, and
which conversations a message `from` an ID belongs to), on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dripline.store import (
    ConversationUpdate,
    Enrollment,
    MessageUpdate,
    Outcome,
    Reservation,
    Store,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
BR = "+5531988887777"  # Meta may report 553188887777 (no ninth digit)
MX = "+525512345678"  # Meta may report 5215512345678
US = "+14155550123"


async def send(store: Store, cid: int, wa_id: str | None, wamid: str = "wamid.X") -> None:
    """Claim, reserve and record an accepted send of step 0 whose answer said `wa_id`."""
    claimed = await store.claim_due(100, 60, "w", NOW)
    await store.release([c.id for c in claimed if c.id != cid], "w")
    [r] = await store.reserve([Reservation(cid, 0, "question", NOW)], "w", NOW)
    msg = MessageUpdate(r.message_id, "sent", wamid=wamid, sent_at=NOW)
    upd = ConversationUpdate(cid, "awaiting_reply", 0, "question", LATER, 0, wa_id=wa_id)
    assert await store.record_results([Outcome(upd, msg)], "w", NOW) == 1


async def wa_id_of(store: Store, cid: int) -> str | None:
    return (await store.conversations_by_ids([cid]))[cid].wa_id


async def test_the_reported_wa_id_is_stored_and_kept(store: Store) -> None:
    [br, us] = [r.id for r in await store.enroll([Enrollment(BR, "f"), Enrollment(US, "f")], NOW)]
    assert await wa_id_of(store, br) is None  # nothing sent yet
    await send(store, br, "553188887777")
    await send(store, us, None, wamid="wamid.Y")
    assert await wa_id_of(store, br) == "553188887777"
    assert await wa_id_of(store, us) is None  # an answer without one changes nothing
    # A later write without a wa_id keeps the learned one.
    claimed = await store.claim_due(10, 60, "w", LATER)
    assert br in [c.id for c in claimed]
    upd = ConversationUpdate(br, "completed", 1, "question", None, 0)
    await store.record_results([Outcome(upd)], "w", LATER)
    assert await wa_id_of(store, br) == "553188887777"


async def test_a_sender_is_found_by_wa_id_then_by_its_numbers_variants(store: Store) -> None:
    enrolled = await store.enroll(
        [Enrollment(BR, "f"), Enrollment(MX, "f"), Enrollment(MX, "g"), Enrollment(US, "f")],
        NOW,
    )
    br, mx_f, mx_g, us = (r.id for r in enrolled)
    await send(store, br, "553188887777")  # learned
    async with store.webhook_transaction() as tx:
        found = await tx.conversations_for(
            ["+553188887777", "+5215512345678", US, "+14155550999"], NOW
        )
    assert [c.id for c in found["+553188887777"].active] == [br]  # by wa_id
    assert [c.id for c in found["+5215512345678"].active] == [mx_f, mx_g]  # by variant
    assert [c.id for c in found[US].active] == [us]
    assert found["+14155550999"].active == () and found["+14155550999"].latest_id is None
    assert found["+5215512345678"].latest_id == mx_g


async def test_a_known_wa_id_that_differs_rules_out_the_variant(store: Store) -> None:
    [cid] = [r.id for r in await store.enroll([Enrollment(BR, "f")], NOW)]
    await send(store, cid, "5531988887777")  # Meta kept the ninth digit for this user
    async with store.webhook_transaction() as tx:
        found = await tx.conversations_for(["+553188887777", BR], NOW)
    # The 12-digit ID is another WhatsApp account: not this conversation's user.
    assert found["+553188887777"].active == ()
    assert found["+553188887777"].latest_id is None
    assert [c.id for c in found[BR].active] == [cid]


async def test_finished_conversations_count_for_the_newest_only(store: Store) -> None:
    [cid] = [r.id for r in await store.enroll([Enrollment(MX, "f")], NOW)]
    await send(store, cid, "5215512345678")
    claimed = await store.claim_due(10, 60, "w", LATER)
    assert [c.id for c in claimed] == [cid]
    upd = ConversationUpdate(cid, "completed", 1, "question", None, 0)
    await store.record_results([Outcome(upd)], "w", LATER)
    async with store.webhook_transaction() as tx:
        found = await tx.conversations_for(["+5215512345678"], LATER)
    assert found["+5215512345678"].active == ()
    assert found["+5215512345678"].latest_id == cid


async def test_replied_to_maps_our_wamids_to_conversations(store: Store) -> None:
    [a, b] = [r.id for r in await store.enroll([Enrollment(US, "f"), Enrollment(MX, "f")], NOW)]
    await send(store, a, None, wamid="wamid.A")
    await send(store, b, "5215512345678", wamid="wamid.B")
    async with store.webhook_transaction() as tx:
        assert await tx.replied_to(["wamid.A", "wamid.B", "wamid.nope"]) == {
            "wamid.A": a,
            "wamid.B": b,
        }
        assert await tx.replied_to([]) == {}
