"""PostgreSQL: the dispatcher's statements keep plans whose cost does not grow with the
tables (issue 14: a 50,000-conversation drain fell from ~1,400 to ~460 msg/s).

Measured by PostgreSQL's own counters, never by time: the prepared statements' generic
and custom plan counts, and the sequential scans of `messages` the statistics report.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from dripline.store import (
    ConversationUpdate,
    Enrollment,
    MessageUpdate,
    Outcome,
    Reservation,
    Store,
    open_store,
)
from dripline.store.types import WorkerInfo

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _on_store_connection(store: Store, sql: str) -> list[tuple[object, ...]]:
    """Run `sql` on the store's own (only) pooled connection."""
    async with store._engine.connect() as conn:  # type: ignore[attr-defined]
        return [tuple(r) for r in await conn.exec_driver_sql(sql)]


async def _on_lane_connection(store: Store, sql: str) -> list[tuple[object, ...]]:
    """Run `sql` on the connection of the store's hot path (postgres_lane.py)."""

    async def fetch(conn: asyncpg.Connection) -> list[tuple[object, ...]]:
        return [tuple(r) for r in await conn.fetch(sql)]

    return await store._lane.run(fetch)  # type: ignore[attr-defined,no-any-return]


async def _messages_scans(store: Store, url: str) -> tuple[int, int]:
    """(sequential, index) scans of `messages` so far, the store's included."""
    # Sent when the store's connections next go idle, i.e. before this returns.
    await _on_store_connection(store, "SELECT pg_stat_force_next_flush()")
    await _on_lane_connection(store, "SELECT pg_stat_force_next_flush()")
    conn = await asyncpg.connect(_dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = 'messages'"
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["seq_scan"] or 0), int(row["idx_scan"] or 0)


async def test_claims_are_planned_for_their_own_limit(postgres_url: str) -> None:
    # After five runs PostgreSQL may switch a prepared statement to a generic plan; the
    # claim's, made for an unknown LIMIT, joined by a scan of every conversation.
    store = await open_store(postgres_url, pool_size=1)
    try:
        await store.enroll([Enrollment(f"+1415555{i:04d}", "f", at=NOW) for i in range(40)], NOW)
        for i in range(12):
            claimed = await store.claim_due(2, 60, "w", NOW + timedelta(seconds=i))
            assert len(claimed) == 2
        rows = await _on_lane_connection(
            store,
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%UPDATE conversations SET lease_owner%' "
            "AND statement NOT LIKE '%pg_prepared_statements%'",
        )
    finally:
        await store.close()
    assert rows, "the claim ran as a prepared statement"
    assert sum(int(str(r[1])) for r in rows) == 0, rows
    assert sum(int(str(r[2])) for r in rows) >= 12, rows


async def test_reservations_read_prior_messages_by_index_without_statistics(
    postgres_url: str,
) -> None:
    # A new `messages` table has no statistics until ANALYZE (autovacuum may be off or
    # not have run): `conversation_id IN (200 ids)` was then guessed to match half the
    # table, and every reservation read all of it.
    n = 10_000
    conn = await asyncpg.connect(_dsn(postgres_url))
    try:
        await conn.execute(
            """
            INSERT INTO conversations (phone, flow, step, purpose, state, next_send_at,
                                       attempts, created_at, updated_at)
            SELECT '+1555' || lpad(i::text, 7, '0'), 'f', 1, 'question', 'in_progress',
                   $1::timestamptz, 0, $1::timestamptz, $1::timestamptz
            FROM generate_series(1, $2) AS i
            """,
            NOW,
            n,
        )
        await conn.execute(
            """
            INSERT INTO messages (conversation_id, step, purpose, status, attempts,
                                  status_at, created_at, updated_at, reserved_at)
            SELECT id, 0, 'question', 'sent', 1, $1::timestamptz, $1::timestamptz,
                   $1::timestamptz, $1::timestamptz
            FROM conversations
            """,
            NOW,
        )
    finally:
        await conn.close()
    store = await open_store(postgres_url, pool_size=1)
    try:
        claimed = await store.claim_due(200, 60, "w", NOW)
        assert len(claimed) == 200
        before = await _messages_scans(store, postgres_url)
        # Step 0 again: each key has its message row, sent, so nothing is reserved.
        items = [Reservation(c.id, 0, "question", NOW) for c in claimed]
        results = await store.reserve(items, "w", NOW + timedelta(seconds=1))
        after = await _messages_scans(store, postgres_url)
    finally:
        await store.close()
    assert [(r.ok, r.prior_status) for r in results] == [(False, "sent")] * 200
    assert after[0] == before[0], f"messages scanned in full: {before} -> {after}"
    assert after[1] > before[1]


async def test_the_hot_paths_statements_are_never_planned_generically(postgres_url: str) -> None:
    # The lane (postgres_lane.py) prepares its statements by name; its session plans
    # each run for its parameters (plan_cache_mode), however often a statement runs.
    store = await open_store(postgres_url, pool_size=1)
    try:
        await store.enroll([Enrollment(f"+1415555{i:04d}", "f", at=NOW) for i in range(16)], NOW)
        for i in range(8):
            at = NOW + timedelta(seconds=i)
            claim = await store.claim_next(2, 60, "w", at)
            convs = claim.conversations
            assert len(convs) == 2
            assert await store.extend_leases([c.id for c in convs], "w", 60, at)
            items = [Reservation(c.id, c.step, c.purpose, NOW) for c in convs]
            results = await store.reserve(items, "w", at)
            outcomes = [
                Outcome(
                    ConversationUpdate(c.id, "completed", c.step, c.purpose, None, 1),
                    MessageUpdate(r.message_id, "sent", wamid=f"wamid.{r.message_id}"),
                )
                for c, r in zip(convs, results, strict=True)
            ]
            assert await store.record_results(outcomes, "w", at) == 2
            await store.heartbeat(WorkerInfo("w", "h", 1, NOW, at, 1.0, 1, "static"), 30)
        rows = await _on_lane_connection(
            store,
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
            # asyncpg's own (its type introspection, and JIT off around it) left out
            "WHERE statement LIKE '%$1%' AND statement NOT LIKE '%pg_prepared_statements%' "
            "AND statement NOT LIKE '%set_config(''jit''%' "
            "AND statement NOT LIKE '%typeinfo_tree%'",
        )
    finally:
        await store.close()
    # claim, lock, prior read, insert, record, extension, heartbeat
    assert len(rows) >= 7, rows
    assert all(int(str(r[1])) == 0 for r in rows), rows
    few = [(" ".join(str(r[0]).split())[:60], r[2]) for r in rows if int(str(r[2])) < 8]
    assert not few, few
