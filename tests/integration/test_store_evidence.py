"""The evidence about unknown sends, on every backend: when a status webhook first
reached each message, what was reserved after it, and when the webhook intake was up.
See dripline.dispatcher.reconcile for the rule these facts feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dripline.store import (
    ConversationChange,
    Enrollment,
    Reservation,
    StatusUpdate,
    Store,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sec(s: float) -> timedelta:
    return timedelta(seconds=s)


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


async def reserve_one(store: Store, i: int, at: datetime) -> int:
    """Enroll conversation i, claim and reserve its first send at `at`; its message id."""
    [e] = await store.enroll([Enrollment(phone(i), "f", at=at)], at)
    await store.claim_due(100, 60, f"w{i}", at)
    [r] = await store.reserve([Reservation(e.id, 0, "question", at)], f"w{i}", at)
    assert r.ok
    return r.message_id


async def apply_status(store: Store, message_id: int, status: str, now: datetime) -> None:
    async with store.webhook_transaction() as tx:
        update = StatusUpdate(f"wamid.{message_id}", status, now, message_id)
        await tx.apply_statuses([update], now)


async def test_status_evidence_comes_from_sends_reserved_since(store: Store) -> None:
    lost = await reserve_one(store, 1, NOW)
    before = await reserve_one(store, 0, NOW - sec(10))  # reserved earlier: no evidence
    after = await reserve_one(store, 2, NOW + sec(5))
    await apply_status(store, before, "sent", NOW + sec(1))
    assert await store.status_evidence([(lost, NOW)], NOW + sec(100)) == {}
    await apply_status(store, after, "sent", NOW + sec(6))
    # Only statuses applied by `before` count.
    assert await store.status_evidence([(lost, NOW)], NOW + sec(5)) == {}
    assert await store.status_evidence([(lost, NOW)], NOW + sec(100)) == {lost: NOW + sec(6)}
    # The message's own status is never evidence about itself.
    assert await store.status_evidence([(after, NOW + sec(5))], NOW + sec(100)) == {}
    assert await store.status_evidence([], NOW) == {}


async def test_the_first_status_webhook_is_the_evidence(store: Store) -> None:
    lost = await reserve_one(store, 1, NOW)
    other = await reserve_one(store, 2, NOW + sec(1))
    await apply_status(store, other, "sent", NOW + sec(2))
    await apply_status(store, other, "delivered", NOW + sec(30))
    await apply_status(store, other, "read", NOW + sec(60))
    assert await store.status_evidence([(lost, NOW)], NOW + sec(100)) == {lost: NOW + sec(2)}


async def test_intake_uptime_records_each_run(store: Store) -> None:
    keep = 3600.0
    assert await store.intake_uptime(NOW) == []
    await store.record_intake("a", NOW, NOW, keep_s=keep)
    await store.record_intake("a", NOW, NOW + sec(5), keep_s=keep)
    await store.record_intake("b", NOW + sec(20), NOW + sec(30), keep_s=keep)
    assert await store.intake_uptime(NOW) == [(NOW, NOW + sec(5)), (NOW + sec(20), NOW + sec(30))]
    # Runs whose last heartbeat is older than `since` are not needed.
    assert await store.intake_uptime(NOW + sec(10)) == [(NOW + sec(20), NOW + sec(30))]
    # Runs older than keep_s are forgotten at the next heartbeat.
    await store.record_intake("c", NOW + sec(4000), NOW + sec(4000), keep_s=keep)
    assert await store.intake_uptime(NOW) == [(NOW + sec(4000), NOW + sec(4000))]


async def test_a_webhook_change_clears_a_lapsed_lease(store: Store) -> None:
    """After the processor changed a conversation (a STOP, a reply), the dispatcher
    whose lease lapsed can neither extend it nor write its late result."""
    [e] = await store.enroll([Enrollment(phone(1), "f", at=NOW)], NOW)
    await store.claim_due(1, 10, "w", NOW)
    later = NOW + sec(11)
    async with store.webhook_transaction() as tx:
        found = await tx.conversations_for([phone(1)], later)
        assert not found[phone(1)].busy
        [row] = found[phone(1)].active
        change = ConversationChange(
            row.id, "opted_out", row.step, row.purpose, None, 0, "opted out", later
        )
        await tx.update_conversations([change], later)
    [now_row] = (await store.conversations_by_ids([e.id])).values()
    assert (now_row.state, now_row.lease_owner, now_row.lease_expires_at) == (
        "opted_out",
        None,
        None,
    )
    assert await store.extend_leases([e.id], "w", 10, later) == []
