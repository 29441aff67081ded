"""The store contract, run unchanged on SQLite, PostgreSQL and in memory (the `store`
fixture): enrollment, claims, reservations, results, leases, timing, workers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from dripline.store import (
    LEASE_LOST,
    ConversationUpdate,
    Enrollment,
    MemoryDatabase,
    MemoryStore,
    MessageUpdate,
    Outcome,
    Reservation,
    Store,
    WorkerInfo,
    open_store,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def sec(s: float) -> timedelta:
    return timedelta(seconds=s)


async def enroll_due(store: Store, n: int, *, flow: str = "f") -> list[int]:
    """n conversations due one second apart, the first at NOW - n s."""
    items = [Enrollment(phone(i), flow, at=NOW - sec(n - i)) for i in range(n)]
    return [r.id for r in await store.enroll(items, NOW)]


def done(cid: int, *, state: str = "completed", next_at: datetime | None = None) -> Outcome:
    return Outcome(ConversationUpdate(cid, state, 1, "question", next_at, 0))


# enrollment -----------------------------------------------------------------
async def test_enroll_bulk_keeps_input_order_and_fields(store: Store) -> None:
    items = [
        Enrollment(phone(i), "f", name=f"n{i}", timezone="Europe/Paris", fields={"k": str(i)})
        for i in range(3000)
    ]
    results = await store.enroll(items, NOW)
    assert len(results) == 3000
    assert all(r.created for r in results)
    assert len({r.id for r in results}) == 3000
    claimed = await store.claim_due(3000, 60, "w", NOW)
    by_id = {c.id: c for c in claimed}
    for i in (0, 1234, 2999):
        c = by_id[results[i].id]
        assert (c.phone, c.name, c.timezone, c.fields) == (
            phone(i),
            f"n{i}",
            "Europe/Paris",
            {"k": str(i)},
        )
        assert (c.state, c.step, c.purpose, c.attempts) == ("pending", 0, "question", 0)
        assert c.next_send_at == NOW


async def test_enroll_is_idempotent_per_active_phone_and_flow(store: Store) -> None:
    first = await store.enroll([Enrollment(phone(1), "a"), Enrollment(phone(2), "a")], NOW)
    again = await store.enroll(
        [
            Enrollment(phone(3), "a"),
            Enrollment(phone(1), "a"),
            Enrollment(phone(1), "b"),  # another flow: a new conversation
            Enrollment(phone(3), "a"),  # a duplicate within the batch
        ],
        NOW,
    )
    assert [r.created for r in again] == [True, False, True, False]
    assert again[1].id == first[0].id
    assert again[3].id == again[0].id
    # A finished conversation does not block a new one for the same (phone, flow).
    [claimed] = [c for c in await store.claim_due(10, 60, "w", NOW) if c.id == first[0].id]
    await store.record_results([done(claimed.id)], "w", NOW)
    [renewed] = await store.enroll([Enrollment(phone(1), "a")], NOW)
    assert renewed.created and renewed.id != first[0].id


async def test_enroll_at_sets_next_send_at(store: Store) -> None:
    later = NOW + timedelta(hours=2)
    await store.enroll([Enrollment(phone(1), "f", at=later)], NOW)
    assert await store.claim_due(10, 60, "w", NOW) == []
    assert await store.next_due_at(NOW) == later
    [c] = await store.claim_due(10, 60, "w", later)
    assert c.next_send_at == later


async def test_enroll_of_nothing(store: Store) -> None:
    assert await store.enroll([], NOW) == []


# claiming -------------------------------------------------------------------
async def test_claim_returns_earliest_first_up_to_limit(store: Store) -> None:
    ids = await enroll_due(store, 50)
    await store.enroll([Enrollment(phone(999), "f", at=NOW + sec(1))], NOW)  # not due
    first = await store.claim_due(20, 60, "w1", NOW)
    assert [c.id for c in first] == ids[:20]
    assert [c.next_send_at for c in first] == sorted(c.next_send_at or NOW for c in first)
    assert all(c.lease_expires_at == NOW + sec(60) and c.lease_owner == "w1" for c in first)
    assert all((c.created_at, c.updated_at, c.last_error) == (NOW, NOW, None) for c in first)
    rest = await store.claim_due(100, 60, "w2", NOW)
    assert [c.id for c in rest] == ids[20:]
    assert await store.claim_due(100, 60, "w3", NOW) == []
    assert await store.claim_due(0, 60, "w3", NOW) == []


async def test_live_lease_is_never_claimed_again_and_lapsed_one_is(store: Store) -> None:
    ids = await enroll_due(store, 3)
    claimed = await store.claim_due(10, 30, "w1", NOW)
    assert {c.id for c in claimed} == set(ids)
    # Still live one microsecond before expiry (and exactly at it).
    assert await store.claim_due(10, 30, "w2", NOW + sec(29.999999)) == []
    assert await store.claim_due(10, 30, "w2", NOW + sec(30)) == []
    again = await store.claim_due(10, 30, "w2", NOW + sec(30.000001))
    assert {c.id for c in again} == set(ids)
    # The old owner lost it: its write is refused and the new owner's stands.
    assert await store.record_results([done(ids[0])], "w1", NOW + sec(31)) == 0
    assert await store.record_results([done(ids[0])], "w2", NOW + sec(31)) == 1


async def test_inactive_states_are_never_due(store: Store) -> None:
    ids = await enroll_due(store, 3)
    await store.claim_due(10, 60, "w", NOW)
    await store.record_results(
        [
            done(ids[0], state="completed", next_at=NOW),
            done(ids[1], state="opted_out", next_at=NOW),
            done(ids[2], state="awaiting_reply", next_at=NOW),
        ],
        "w",
        NOW,
    )
    assert [c.id for c in await store.claim_due(10, 60, "w", NOW)] == [ids[2]]


# reserving ------------------------------------------------------------------
async def test_reserve_new_pending_sending_and_final(store: Store) -> None:
    [a, b] = await enroll_due(store, 2)
    await store.claim_due(10, 60, "w", NOW)
    [r] = await store.reserve([Reservation(a, 0, "question", NOW)], "w", NOW)
    assert (r.ok, r.prior_status, r.attempts) == (True, None, 1) and r.message_id > 0
    assert r.reserved_at == NOW

    # Left `sending` (the worker crashed): the next reservation marks it unknown.
    [again] = await store.reserve([Reservation(a, 0, "question", NOW)], "w", NOW + sec(1))
    assert (again.ok, again.prior_status, again.message_id) == (False, "sending", r.message_id)
    [unknown] = await store.reserve([Reservation(a, 0, "question", NOW)], "w", NOW + sec(1))
    assert (unknown.ok, unknown.prior_status) == (False, "unknown")
    # At-least-once: take it over and send again.
    assert unknown.reserved_at == NOW  # when it was last reserved for a send
    [resend] = await store.reserve(
        [Reservation(a, 0, "question", NOW, resend_unknown=True)], "w", NOW + sec(5)
    )
    assert (resend.ok, resend.prior_status, resend.attempts) == (True, "unknown", 2)
    assert resend.reserved_at == NOW + sec(5)

    # Written `pending` (safe to resend): reserved again with attempts + 1.
    m_pending = MessageUpdate(r.message_id, "pending", error_code=131000, error_title="x")
    await store.record_results(
        [Outcome(ConversationUpdate(a, "pending", 0, "question", NOW, 1), m_pending)], "w", NOW
    )
    await store.claim_due(10, 60, "w", NOW)
    [retry] = await store.reserve([Reservation(a, 0, "question", NOW)], "w", NOW)
    assert (retry.ok, retry.prior_status, retry.attempts) == (True, "pending", 3)

    # A final status: not ok, with what the caller needs to decide.
    sent = MessageUpdate(r.message_id, "sent", wamid="wamid.A", sent_at=NOW)
    await store.record_results(
        [Outcome(ConversationUpdate(a, "pending", 0, "question", NOW, 1), sent)], "w", NOW
    )
    await store.claim_due(10, 60, "w", NOW)
    [final, new_b] = await store.reserve(
        [Reservation(a, 0, "question", NOW), Reservation(b, 0, "question", NOW)], "w", NOW
    )
    assert (final.ok, final.prior_status, final.wamid) == (False, "sent", "wamid.A")
    assert final.status_at == NOW
    assert (new_b.conversation_id, new_b.ok, new_b.prior_status) == (b, True, None)


async def test_a_retried_reservation_is_still_ours(store: Store) -> None:
    """A reservation that committed but whose answer was lost (the database went away
    mid-call) is retried with the same `now`: the rows are still the caller's to send,
    not a crashed worker's unknown sends."""
    [a] = await enroll_due(store, 1)
    await store.claim_due(1, 60, "w", NOW)
    [first] = await store.reserve([Reservation(a, 0, "question", NOW)], "w", NOW)
    [retried] = await store.reserve([Reservation(a, 0, "question", NOW)], "w", NOW)
    assert (retried.ok, retried.message_id, retried.attempts) == (True, first.message_id, 1)
    # Any later reservation is another attempt: the row was left sending.
    [later] = await store.reserve([Reservation(a, 0, "question", NOW)], "w", NOW + sec(1))
    assert (later.ok, later.prior_status) == (False, "sending")


async def test_reserve_needs_the_lease(store: Store) -> None:
    [a] = await enroll_due(store, 1)
    await store.claim_due(10, 60, "owner", NOW)
    [r] = await store.reserve([Reservation(a, 0, "question", NOW)], "intruder", NOW)
    assert (r.ok, r.prior_status) == (False, LEASE_LOST)
    [ok] = await store.reserve([Reservation(a, 0, "question", NOW)], "owner", NOW)
    assert ok.ok


async def test_reserve_results_follow_input_order(store: Store) -> None:
    ids = await enroll_due(store, 300)
    await store.claim_due(300, 60, "w", NOW)
    items = [Reservation(cid, 0, "question", NOW) for cid in reversed(ids)]
    results = await store.reserve(items, "w", NOW)
    assert [r.conversation_id for r in results] == list(reversed(ids))
    assert all(r.ok for r in results)
    assert len({r.message_id for r in results}) == 300


# recording ------------------------------------------------------------------
async def test_record_results_writes_batch_and_releases(store: Store) -> None:
    ids = await enroll_due(store, 4)
    await store.claim_due(10, 60, "w", NOW)
    res = await store.reserve([Reservation(cid, 0, "question", NOW) for cid in ids], "w", NOW)
    later = NOW + timedelta(hours=1)
    outcomes = [
        Outcome(
            ConversationUpdate(cid, "awaiting_reply", 1, "reminder", later, 0),
            MessageUpdate(r.message_id, "sent", wamid=f"wamid.{cid}", sent_at=NOW, latency_ms=5),
        )
        for cid, r in zip(ids, res, strict=True)
    ]
    assert await store.record_results(outcomes, "w", NOW) == 4
    assert (await store.backlog(NOW)).leased == 0
    [c, *_] = await store.claim_due(10, 60, "w", later)
    assert (c.state, c.step, c.purpose, c.next_send_at) == ("awaiting_reply", 1, "reminder", later)
    # The message status was written: a new reservation sees it as final.
    [again] = await store.reserve([Reservation(c.id, 0, "question", NOW)], "w", later)
    assert (again.ok, again.prior_status, again.wamid) == (False, "sent", f"wamid.{c.id}")


async def test_record_results_never_downgrades_a_webhook_status(store: Store) -> None:
    [a] = await enroll_due(store, 1)
    await store.claim_due(10, 60, "w", NOW)
    [r] = await store.reserve([Reservation(a, 0, "question", NOW)], "w", NOW)
    upd = ConversationUpdate(a, "pending", 0, "question", NOW, 0)
    read = MessageUpdate(r.message_id, "read")
    await store.record_results([Outcome(upd, read)], "w", NOW)
    await store.claim_due(10, 60, "w", NOW)
    sent = MessageUpdate(r.message_id, "sent", wamid="wamid.late", sent_at=NOW)
    await store.record_results([Outcome(upd, sent)], "w", NOW)
    await store.claim_due(10, 60, "w", NOW)
    [seen] = await store.reserve([Reservation(a, 0, "question", NOW)], "w", NOW)
    assert (seen.prior_status, seen.wamid) == ("read", "wamid.late")


async def test_a_worker_that_lost_its_lease_cannot_write(store: Store) -> None:
    [a, b] = await enroll_due(store, 2)
    await store.claim_due(10, 10, "old", NOW)
    await store.claim_due(10, 10, "new", NOW + sec(11))  # re-claims both
    assert await store.record_results([done(a), done(b)], "old", NOW + sec(12)) == 0
    assert await store.record_results([done(a)], "new", NOW + sec(12)) == 1
    counts = await store.backlog(NOW + sec(12))
    assert counts.by_state["completed"] == 1 and counts.by_state["pending"] == 1


# leases -----------------------------------------------------------------------
async def test_release_gives_back_only_own_leases(store: Store) -> None:
    ids = await enroll_due(store, 3)
    await store.claim_due(2, 60, "w1", NOW)
    await store.claim_due(1, 60, "w2", NOW)
    assert await store.release(ids, "w1") == 2
    assert await store.release([], "w1") == 0
    assert [c.id for c in await store.claim_due(10, 60, "w3", NOW)] == ids[:2]


async def test_extend_pushes_out_own_leases(store: Store) -> None:
    ids = await enroll_due(store, 2)
    await store.claim_due(1, 30, "w1", NOW)
    await store.claim_due(1, 30, "w2", NOW)
    assert await store.extend_leases(ids, "w1", 120, NOW + sec(20)) == [ids[0]]
    again = await store.claim_due(10, 30, "w3", NOW + sec(60))
    assert [c.id for c in again] == [ids[1]]  # w1's lease now runs to NOW + 140 s


async def test_a_lapsed_lease_is_not_extended(store: Store) -> None:
    """A worker that was paused past its lease must not revive it: meanwhile the inbox
    processor may have applied a STOP (it only waits for live leases)."""
    [a] = await enroll_due(store, 1)
    await store.claim_due(1, 10, "w", NOW)
    assert await store.extend_leases([a], "w", 10, NOW + sec(10)) == [a]  # at expiry: live
    assert await store.extend_leases([a], "w", 10, NOW + sec(21)) == []
    assert await store.extend_leases([], "w", 10, NOW) == []


async def test_a_lapsed_lease_cannot_reserve_or_write(store: Store) -> None:
    """Fencing: nothing this worker does with a lapsed lease reaches the row, even when
    nobody re-claimed it (the inbox processor may have changed it)."""
    [a] = await enroll_due(store, 1)
    await store.claim_due(1, 10, "w", NOW)
    [r] = await store.reserve([Reservation(a, 0, "question", NOW)], "w", NOW + sec(11))
    assert (r.ok, r.prior_status) == (False, LEASE_LOST)
    assert await store.record_results([done(a)], "w", NOW + sec(11)) == 0
    assert await store.record_results([done(a)], "w", NOW + sec(10)) == 1  # still live


# timing and views -----------------------------------------------------------
async def test_next_due_at_skips_leased_and_inactive(store: Store) -> None:
    assert await store.next_due_at(NOW) is None
    ids = await enroll_due(store, 2)
    await store.enroll([Enrollment(phone(50), "f", at=NOW + sec(90))], NOW)
    assert await store.next_due_at(NOW) == NOW - sec(2)
    await store.claim_due(2, 60, "w", NOW)
    assert await store.next_due_at(NOW) == NOW + sec(90)
    # Once the lease lapsed, the leased rows count again.
    assert await store.next_due_at(NOW + sec(61)) == NOW - sec(2)
    await store.record_results([done(i) for i in ids], "w", NOW)
    assert await store.next_due_at(NOW + sec(61)) == NOW + sec(90)


async def test_claim_next_claims_and_reports_the_next_due_in_one_call(store: Store) -> None:
    """claim_next = claim_due + next_due_at(now) after it: the claimed rows no longer
    count, an unleased later row does, a lapsed lease counts again."""
    ids = await enroll_due(store, 3)
    await store.enroll([Enrollment(phone(50), "f", at=NOW + sec(90))], NOW)
    claim = await store.claim_next(2, 60, "w", NOW)
    assert [c.id for c in claim.conversations] == ids[:2]
    assert claim.next_due_at == NOW - sec(1)  # the third is still due
    claim = await store.claim_next(5, 60, "w", NOW)
    assert [c.id for c in claim.conversations] == ids[2:]
    assert claim.next_due_at == NOW + sec(90)
    empty = await store.claim_next(5, 60, "w2", NOW)
    assert (empty.conversations, empty.next_due_at) == ([], NOW + sec(90))
    lapsed = await store.claim_next(0, 60, "w2", NOW + sec(61))
    assert (lapsed.conversations, lapsed.next_due_at) == ([], NOW - sec(3))


async def test_record_and_claim_records_first_and_the_claim_sees_it(store: Store) -> None:
    """record_and_claim = record_results, then claim_next: a conversation the record
    made due again is claimed by the same call, a completed one is not."""
    ids = await enroll_due(store, 3)  # due at NOW - 3 s, - 2 s, - 1 s
    await store.claim_due(2, 60, "w", NOW)
    [r] = await store.reserve([Reservation(ids[0], 0, "question", NOW)], "w", NOW)
    again = ConversationUpdate(ids[0], "pending", 1, "question", NOW - sec(10), 0)
    outcomes = [Outcome(again, MessageUpdate(r.message_id, "sent", sent_at=NOW)), done(ids[1])]
    recorded, claim = await store.record_and_claim(outcomes, 5, 60, "w", NOW)
    assert recorded == 2
    assert [(c.id, c.step) for c in claim.conversations] == [(ids[0], 1), (ids[2], 0)]
    assert claim.next_due_at is None
    nothing, empty = await store.record_and_claim([], 5, 60, "w", NOW)
    assert (nothing, empty.conversations) == (0, [])


async def test_backlog_counts(store: Store) -> None:
    await store.enroll(
        [
            Enrollment(phone(1), "f", at=NOW - sec(120)),  # overdue by 2 min
            Enrollment(phone(2), "f", at=NOW - sec(30)),
            Enrollment(phone(3), "f", at=NOW),
            Enrollment(phone(4), "f", at=NOW + sec(600)),
            Enrollment(phone(5), "f", at=NOW + sec(7200)),
        ],
        NOW,
    )
    counts = await store.backlog(NOW)
    assert (counts.due_now, counts.overdue_1m, counts.due_next_hour, counts.leased) == (3, 1, 1, 0)
    assert counts.by_state["pending"] == 5 and counts.by_state["completed"] == 0
    [first] = await store.claim_due(1, 60, "w", NOW)
    await store.record_results([done(first.id)], "w", NOW)
    await store.claim_due(1, 60, "w", NOW)
    counts = await store.backlog(NOW)
    assert (counts.due_now, counts.overdue_1m, counts.leased) == (1, 0, 1)
    assert counts.by_state["completed"] == 1 and counts.by_state["pending"] == 4


async def test_heartbeat_lists_live_workers(store: Store) -> None:
    def worker(wid: str, at: datetime, rate: float = 40.0) -> WorkerInfo:
        return WorkerInfo(wid, "host", 123, NOW, at, rate, 8, "static", {"sent": 1})

    assert [w.id for w in await store.heartbeat(worker("a", NOW), 10)] == ["a"]
    live = await store.heartbeat(worker("b", NOW + sec(5)), 10)
    assert [w.id for w in live] == ["a", "b"]
    assert live[0].stats == {"sent": 1} and live[0].heartbeat_at == NOW
    # a is now stale; b's upsert replaces its row.
    live = await store.heartbeat(worker("b", NOW + sec(15), rate=80.0), 10)
    assert [(w.id, w.rate_per_s) for w in live] == [("b", 80.0)]
    await store.unregister("b")
    assert [w.id for w in await store.heartbeat(worker("a", NOW + sec(16)), 10)] == ["a"]


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(Exception, match="naive"):
        await store.claim_due(1, 60, "w", datetime(2026, 1, 1))


# wake-ups -------------------------------------------------------------------
async def _wakes(sleeper: Store, enroller: Store) -> None:
    try:
        wake = sleeper.wakeup_event()
        await sleeper.wakeup_ready()
        assert not wake.is_set()
        await enroller.enroll([Enrollment(phone(1), "f")], NOW)
        await asyncio.wait_for(wake.wait(), timeout=10)
        wake.clear()
        # Nothing new (already enrolled): no wake-up needed, none sent.
        await enroller.enroll([Enrollment(phone(1), "f")], NOW)
        await enroller.enroll([Enrollment(phone(2), "f")], NOW)
        await asyncio.wait_for(wake.wait(), timeout=10)
    finally:
        await sleeper.close()
        await enroller.close()


async def test_enroll_wakes_another_store_on_the_same_database(store_url: str) -> None:
    await _wakes(await open_store(store_url), await open_store(store_url))


async def test_enroll_wakes_another_memory_store_on_the_same_database() -> None:
    database = MemoryDatabase()
    await _wakes(MemoryStore(database), MemoryStore(database))
