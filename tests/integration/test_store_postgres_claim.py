"""PostgreSQL's claim (`postgres_hot.claim_update`): the lock it takes and the commit it
makes. Issue 14: on 10,000,000 conversations the claim's WAL flush was 0.5-4 ms of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from dripline.store import Enrollment, Reservation, Store, open_store
from dripline.store import postgres_hot as hot

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _lane_setting(store: Store) -> str:
    value: str = await store._lane.run(lambda c: c.fetchval("SHOW synchronous_commit"))  # type: ignore[attr-defined]
    return value


async def test_only_the_claims_own_commit_skips_the_wal_flush(postgres_url: str) -> None:
    store = await open_store(postgres_url, pool_size=1)
    try:
        await store.enroll([Enrollment(f"+1415555{i:04d}", "f", at=NOW) for i in range(4)], NOW)
        sql = store._hot_sql()  # type: ignore[attr-defined]

        async def claim_then_look(conn: Any) -> tuple[int, str]:
            got = await hot.claim_due(conn, sql, 2, 60, "w", NOW)
            return len(got), await conn.fetchval("SHOW synchronous_commit")

        # In the claim's transaction: off (a transaction the statement ran in alone,
        # as the lane runs it, commits with that setting).
        assert await store._lane.run(claim_then_look, transaction=True) == (2, "off")  # type: ignore[attr-defined]
        # ...and only there: the reservation and the record that follow on the same
        # connection wait for their flush, which writes the claim's WAL too.
        assert await _lane_setting(store) == "on"
        claim = await store.claim_next(2, 60, "w", NOW)
        assert len(claim.conversations) == 2
        assert await _lane_setting(store) == "on"
        items = [Reservation(c.id, c.step, c.purpose, NOW) for c in claim.conversations]
        assert all(r.ok for r in await store.reserve(items, "w", NOW))
        assert await _lane_setting(store) == "on"
    finally:
        await store.close()


async def test_a_row_held_for_a_foreign_key_check_is_still_claimed(postgres_url: str) -> None:
    # Inserting a row that references a conversation (a message, an answer) takes KEY
    # SHARE on it until that transaction ends. The claim changes no key, so it needs no
    # lock that conflicts with that one; with FOR UPDATE it skipped such rows.
    store = await open_store(postgres_url, pool_size=1)
    other = await asyncpg.connect(_dsn(postgres_url))
    try:
        await store.enroll([Enrollment(f"+1415555{i:04d}", "f", at=NOW) for i in range(3)], NOW)
        ids = [int(r[0]) for r in await other.fetch("SELECT id FROM conversations ORDER BY id")]
        tr = other.transaction()
        await tr.start()
        try:
            await other.execute("SELECT 1 FROM conversations WHERE id = $1 FOR KEY SHARE", ids[0])
            # Another claimer's (or the inbox processor's) row lock still hides a row.
            await other.execute(
                "SELECT 1 FROM conversations WHERE id = $1 FOR NO KEY UPDATE", ids[1]
            )
            claimed = await store.claim_due(10, 60, "w", NOW)
        finally:
            await tr.rollback()
        assert sorted(c.id for c in claimed) == [ids[0], ids[2]]
    finally:
        await other.close()
        await store.close()


async def test_claimed_rows_are_the_rows_as_read_back(postgres_url: str) -> None:
    # The claim sends times as integer microseconds and not the lease it set (pgclaim):
    # what it builds must be the row a read returns, every column, to the microsecond,
    # in UTC however `now` is given, earliest due first (ties by id), for both claims.
    store = await open_store(postgres_url, pool_size=1)
    other = await asyncpg.connect(_dsn(postgres_url))
    try:
        people = [
            Enrollment(f"+1415555{i:04d}", "f", at=NOW, name="Ana", timezone="Europe/Lisbon")
            for i in range(6)
        ]
        people[1] = Enrollment("+14155550001", "f", at=NOW, sender="s1", fields={"k": "v é"})
        await store.enroll(people, NOW)
        ids = [int(r[0]) for r in await other.fetch("SELECT id FROM conversations ORDER BY id")]
        # Distinct times down to the microsecond, one due time shared by two rows, an
        # answer and a WhatsApp ID on one, an error on another.
        for n, cid in enumerate(ids):
            await other.execute(
                "UPDATE conversations SET next_send_at = $2, created_at = $3,"
                " updated_at = $4 WHERE id = $1",
                cid,
                NOW - timedelta(seconds=n % 3, microseconds=7 * n + 1),
                NOW - timedelta(days=400, microseconds=n),
                NOW - timedelta(microseconds=999_999 - n),
            )
        await other.execute(
            "UPDATE conversations SET last_inbound_at = $2, wa_id = '14155550002',"
            " state = 'in_progress', step = 2 WHERE id = $1",
            ids[2],
            NOW - timedelta(hours=5, microseconds=3),
        )
        await other.execute("UPDATE conversations SET last_error = 'x' WHERE id = $1", ids[3])
        lisbon_noon = NOW.astimezone(timezone(timedelta(hours=-3)))
        first = await store.claim_due(3, 60.5, "w1", lisbon_noon)
        rest = await store.claim_next(10, 60.5, "w2", NOW)
        for got, worker in ((first, "w1"), (rest.conversations, "w2")):
            assert [(c.next_send_at, c.id) for c in got] == sorted(
                (c.next_send_at, c.id) for c in got
            )
            read = await store.conversations_by_ids([c.id for c in got])
            assert got == [read[c.id] for c in got]
            assert all(c.lease_owner == worker for c in got)
            assert all(c.lease_expires_at == NOW + timedelta(seconds=60.5) for c in got)
            assert all(c.lease_expires_at.tzinfo is UTC for c in got)  # type: ignore[union-attr]
        assert sorted(c.id for c in [*first, *rest.conversations]) == ids
        assert rest.next_due_at is None
    finally:
        await other.close()
        await store.close()
