"""The store contract, part three: the webhook-processing transaction, on every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from dripline.store import (
    ConversationChange,
    ConversationUpdate,
    Enrollment,
    MessageUpdate,
    NewInbound,
    Outcome,
    Reservation,
    StatusUpdate,
    Store,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


async def sent(store: Store, cid: int, status: str = "sent", wamid: str | None = None) -> int:
    """Claim, reserve step 0 and record `status` for it; returns the message id."""
    claimed = await store.claim_due(100, 60, "w", NOW)
    await store.release([c.id for c in claimed if c.id != cid], "w")
    [r] = await store.reserve([Reservation(cid, 0, "question", NOW)], "w", NOW)
    msg = MessageUpdate(r.message_id, status, wamid=wamid, sent_at=NOW if wamid else None)
    upd = ConversationUpdate(cid, "awaiting_reply", 0, "reminder", LATER, 0)
    await store.record_results([Outcome(upd, msg)], "w", NOW)
    return r.message_id


async def message(store: Store, cid: int) -> tuple[object, ...]:
    found = await store.conversation_detail(cid)
    assert found is not None
    [m] = found[1]
    return (m.status, m.wamid, m.sent_at, m.error_code, m.error_title, m.status_at)


def status(
    wamid: str,
    st: str,
    message_id: int | None = None,
    error_code: int | None = None,
    error_title: str | None = None,
) -> StatusUpdate:
    return StatusUpdate(wamid, st, NOW + timedelta(seconds=1), message_id, error_code, error_title)


async def test_inbox_rows_are_taken_in_order_and_waiting_ones_come_back(store: Store) -> None:
    await store.insert_inbox(["a", "b", "c", "d"], NOW)
    async with store.webhook_transaction() as tx:
        rows = await tx.take_inbox(2)
        assert [r.body for r in rows] == ["a", "b"]
        assert [r.body for r in await tx.take_inbox(10, after_id=rows[1].id)] == ["c", "d"]
        await tx.finish_inbox([(rows[0].id, None)], [(rows[1].id, "waiting: " + "x" * 600)], NOW)
    async with store.webhook_transaction() as tx:
        assert [r.body for r in await tx.take_inbox(10)] == ["b", "c", "d"]
    assert (await store.inbox_backlog()).waiting == 3


async def test_statuses_move_forwards_only(store: Store) -> None:
    [a, b] = [r.id for r in await store.enroll([Enrollment(phone(i), "f") for i in (1, 2)], NOW)]
    await sent(store, a, wamid="wamid.A")
    mid_b = await sent(store, b, status="unknown")
    at = NOW + timedelta(seconds=1)
    async with store.webhook_transaction() as tx:
        res = await tx.apply_statuses([status("wamid.A", "delivered")], LATER)
        assert (res.applied, res.unchanged, res.unmatched, res.busy) == (1, 0, 0, frozenset())
    assert await message(store, a) == ("delivered", "wamid.A", NOW, None, None, at)
    async with store.webhook_transaction() as tx:
        # Repeats and lower ranks change nothing; the furthest in a batch wins.
        assert (await tx.apply_statuses([status("wamid.A", "sent")], LATER)).unchanged == 1
        res = await tx.apply_statuses(
            [status("wamid.A", "read"), status("wamid.A", "failed", error_code=1)], LATER
        )
        assert res.applied == 1
        assert (await tx.apply_statuses([status("wamid.nope", "read")], LATER)).unmatched == 1
        assert (await tx.apply_statuses([], LATER)).applied == 0
    assert (await message(store, a))[0] == "read"
    # A lost response: found by the callback id, which fills in the wamid and sent_at.
    async with store.webhook_transaction() as tx:
        res = await tx.apply_statuses([status("wamid.B", "sent", mid_b)], LATER)
        assert res.applied == 1
        # A callback id naming a row that has another wamid matches nothing.
        res = await tx.apply_statuses([status("wamid.C", "read", mid_b)], LATER)
        assert (res.applied, res.unmatched) == (0, 1)
    assert await message(store, b) == ("sent", "wamid.B", at, None, None, at)
    async with store.webhook_transaction() as tx:
        failed = status("wamid.B", "failed", error_code=131026, error_title="Undeliverable")
        assert (await tx.apply_statuses([failed], LATER)).applied == 1
    assert await message(store, b) == ("failed", "wamid.B", at, 131026, "Undeliverable", at)


async def test_counts_cover_every_row_of_a_batch(store: Store) -> None:
    # On PostgreSQL, asyncpg reports no rowcount for executemany: `applied` and the rows
    # written used to read 0 (and `unchanged` counted the applied rows).
    cids = [r.id for r in await store.enroll([Enrollment(phone(i), "f") for i in (1, 2)], NOW)]
    for cid in cids:
        await sent(store, cid, wamid=f"wamid.{cid}")
    changes = [
        ConversationChange(c, "in_progress", 1, "question", LATER, 0, None, NOW) for c in cids
    ]
    async with store.webhook_transaction() as tx:
        res = await tx.apply_statuses([status(f"wamid.{c}", "delivered") for c in cids], LATER)
        written = await tx.update_conversations(changes, NOW)
    assert [(await message(store, c))[0] for c in cids] == ["delivered", "delivered"]
    assert {c.state for c in (await store.conversations_by_ids(cids)).values()} == {"in_progress"}
    assert (res.applied, res.unchanged, written) == (2, 0, 2)


async def test_inbound_is_recorded_once(store: Store) -> None:
    [cid] = [r.id for r in await store.enroll([Enrollment(phone(1), "f")], NOW)]
    row = NewInbound("wamid.IN", cid, phone(1), 0, "text", "hi", NOW)
    async with store.webhook_transaction() as tx:
        assert await tx.existing_inbound(["wamid.IN"]) == set()
        assert await tx.insert_inbound([row, row]) == {"wamid.IN"}
        assert await tx.existing_inbound(["wamid.IN", "wamid.X"]) == {"wamid.IN"}
    async with store.webhook_transaction() as tx:
        assert await tx.insert_inbound([row]) == set()
        assert await tx.insert_inbound([]) == set()
    found = await store.conversation_detail(cid)
    assert found is not None and [a.wamid for a in found[2]] == ["wamid.IN"]


async def test_conversations_for_a_phone(store: Store) -> None:
    results = await store.enroll(
        [
            Enrollment(phone(1), "a", at=NOW - timedelta(seconds=3)),
            Enrollment(phone(1), "b", at=NOW - timedelta(seconds=2)),
            Enrollment(phone(2), "a", at=NOW - timedelta(seconds=1)),
            Enrollment(phone(3), "a", at=NOW),
        ],
        NOW,
    )
    [a1, b1, a2, a3] = [r.id for r in results]
    await sent(store, a3)
    done = ConversationUpdate(a3, "completed", 1, "question", None, 0)
    await store.claim_due(100, 60, "w", LATER)  # a3 is due again (its reminder)
    await store.record_results([Outcome(done)], "w", LATER)
    await store.release([a1, b1, a2], "w")
    [leased] = await store.claim_due(1, 30, "w2", NOW)  # the earliest: a1
    assert leased.id == a1
    async with store.webhook_transaction() as tx:
        found = await tx.conversations_for([phone(1), phone(2), phone(3), phone(4)], NOW)
        assert sorted(found) == [phone(i) for i in (1, 2, 3, 4)]
        one = found[phone(1)]
        assert [c.id for c in one.active] == [a1, b1] and one.busy and one.latest_id == b1
        assert one.active[0].lease_expires_at == NOW + timedelta(seconds=30)
        two = found[phone(2)]
        assert [c.id for c in two.active] == [a2] and not two.busy and two.latest_id == a2
        three = found[phone(3)]
        assert (three.active, three.busy, three.latest_id) == ((), False, a3)
        four = found[phone(4)]
        assert (four.active, four.busy, four.latest_id) == ((), False, None)
        # Live through its expiry instant, as the claim sees it; then no obstacle.
        at_expiry = await tx.conversations_for([phone(1)], NOW + timedelta(seconds=30))
        assert at_expiry[phone(1)].busy
        later = await tx.conversations_for([phone(1)], NOW + timedelta(seconds=31))
        assert not later[phone(1)].busy


async def test_sent_steps(store: Store) -> None:
    cids = [r.id for r in await store.enroll([Enrollment(phone(i), "f") for i in (1, 2)], NOW)]
    await sent(store, cids[0], wamid="wamid.1")
    await sent(store, cids[1], status="unknown")
    async with store.webhook_transaction() as tx:
        keys = [(cids[0], 0), (cids[0], 1), (cids[1], 0)]
        assert await tx.sent_steps(keys) == {(cids[0], 0)}


async def test_update_conversations_writes_and_wakes(store: Store) -> None:
    [cid] = [r.id for r in await store.enroll([Enrollment(phone(1), "f")], NOW)]
    await sent(store, cid, wamid="wamid.1")
    wake = store.wakeup_event()
    await store.wakeup_ready()
    wake.clear()
    change = ConversationChange(cid, "in_progress", 1, "question", LATER, 0, "note", NOW)
    async with store.webhook_transaction() as tx:
        assert await tx.update_conversations([change], NOW) == 1
        assert await tx.update_conversations([], NOW) == 0
    await asyncio.wait_for(wake.wait(), timeout=10)
    [conv] = (await store.conversations_by_ids([cid])).values()
    assert (conv.state, conv.step, conv.purpose, conv.next_send_at) == (
        "in_progress",
        1,
        "question",
        LATER,
    )
    assert (conv.last_error, conv.last_inbound_at, conv.attempts) == ("note", NOW, 0)


async def test_an_exception_rolls_the_batch_back(store: Store) -> None:
    [cid] = [r.id for r in await store.enroll([Enrollment(phone(1), "f")], NOW)]
    await store.insert_inbox(["body"], NOW)
    change = ConversationChange(cid, "opted_out", 0, "question", None, 0, "stop", NOW)
    with pytest.raises(RuntimeError, match="boom"):
        async with store.webhook_transaction() as tx:
            [row] = await tx.take_inbox(10)
            await tx.insert_inbound([NewInbound("wamid.S", cid, phone(1), None, "opt_out", "STOP",
                                                NOW)])  # fmt: skip
            await tx.update_conversations([change], NOW)
            await tx.finish_inbox([(row.id, None)], [], NOW)
            raise RuntimeError("boom")
    assert (await store.inbox_backlog()).waiting == 1
    [conv] = (await store.conversations_by_ids([cid])).values()
    assert conv.state == "pending"
    found = await store.conversation_detail(cid)
    assert found is not None and found[2] == []


async def test_enrollment_knows_when_the_user_last_wrote(store: Store) -> None:
    """A new conversation starts with the user's latest inbound message (from another
    conversation, or from none): its 24-hour window may already be open."""
    [old] = [r.id for r in await store.enroll([Enrollment(phone(1), "f")], NOW)]
    rows = [
        NewInbound("wamid.1", old, phone(1), 0, "text", "hi", NOW - timedelta(hours=3)),
        NewInbound("wamid.2", old, phone(1), 0, "text", "again", NOW - timedelta(hours=1)),
        NewInbound("wamid.3", None, phone(2), None, "text", "hello?", NOW - timedelta(hours=30)),
    ]
    async with store.webhook_transaction() as tx:
        assert len(await tx.insert_inbound(rows)) == 3
    results = await store.enroll(
        [Enrollment(phone(i), "g") for i in (1, 2, 3)] + [Enrollment(phone(1), "f")], NOW
    )
    assert [r.created for r in results] == [True, True, True, False]
    got = await store.conversations_by_ids([r.id for r in results])
    seen = [got[r.id].last_inbound_at for r in results[:3]]
    assert seen == [NOW - timedelta(hours=1), NOW - timedelta(hours=30), None]
