"""The store contract for value-level webhook errors, on SQLite, PostgreSQL and in memory
(the `store` fixture): recorded in the processing transaction, read back by code and
number since a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dripline.store import NewWebhookError, Store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def err(code: int, number: str | None = "1", details: str | None = "d") -> NewWebhookError:
    return NewWebhookError(
        code=code, phone_number_id=number, account_id="9", title="t", details=details
    )


async def test_webhook_errors_are_counted_by_code_and_number_since_a_time(store: Store) -> None:
    assert await store.webhook_errors() == []
    async with store.webhook_transaction() as tx:
        await tx.record_webhook_errors([err(130429), err(130429, details="later")], NOW)
        await tx.record_webhook_errors([err(131000, "2"), err(130429, "2")], NOW)
    async with store.webhook_transaction() as tx:
        await tx.record_webhook_errors([err(130429, details="newest")], NOW + timedelta(minutes=10))
    found = await store.webhook_errors()
    assert [(e.code, e.phone_number_id, e.count) for e in found] == [
        (130429, "1", 3),
        (130429, "2", 1),
        (131000, "2", 1),
    ]
    assert found[0].last_at == NOW + timedelta(minutes=10)
    assert found[0].last_at.tzinfo is not None
    assert found[0].details == "newest"
    recent = await store.webhook_errors(NOW + timedelta(minutes=5))
    assert [(e.code, e.phone_number_id, e.count) for e in recent] == [(130429, "1", 1)]


async def test_webhook_errors_roll_back_with_their_transaction(store: Store) -> None:
    class Boom(Exception):
        pass

    try:
        async with store.webhook_transaction() as tx:
            await tx.record_webhook_errors([err(130429)], NOW)
            raise Boom
    except Boom:
        pass
    assert await store.webhook_errors() == []
