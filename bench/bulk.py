"""Bulk loads for the scale and webhook scenarios: set-based SQL, not `enroll` row by row.

The benchmark is not the product, so it writes the tables directly: PostgreSQL with
`INSERT ... SELECT generate_series`, SQLite with a recursive CTE. Timestamps are written
in the formats dripline's `UTCDateTime` reads (timestamptz; naive UTC text on SQLite).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.engine import make_url

SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"


def _sqlite_path(url: str) -> str:
    path = make_url(url).database
    assert path, url
    return path


def pg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def load_conversations(url: str, total: int, due: int, active_later: int) -> float:
    """`total` demo conversations: rows 1..due pending and due now, the next
    `active_later` waiting for tomorrow, the rest completed. Phones are bench phones
    (`harness.phone(i)` for row i; past 9,999,999 the same sum, +15550000000 + i, keeps
    them unique). Returns seconds taken."""
    now = datetime.now(UTC) - timedelta(seconds=1)
    later = now + timedelta(days=1)
    started = asyncio.get_running_loop().time()
    if url.startswith("sqlite"):
        await asyncio.to_thread(
            _load_sqlite, _sqlite_path(url), total, due, active_later, now, later
        )
    else:
        conn = await asyncpg.connect(pg_dsn(url), timeout=10)
        try:
            await conn.execute(
                """
                INSERT INTO conversations
                    (phone, flow, step, purpose, state, next_send_at, attempts,
                     created_at, updated_at)
                SELECT '+' || (15550000000 + i)::text, 'demo', 0, 'question',
                       CASE WHEN i <= $1 THEN 'pending'
                            WHEN i <= $1 + $2 THEN 'in_progress'
                            ELSE 'completed' END,
                       CASE WHEN i <= $1 THEN $3::timestamptz
                            WHEN i <= $1 + $2 THEN $4::timestamptz
                            ELSE NULL END,
                       0, $3::timestamptz, $3::timestamptz
                FROM generate_series(1, $5) AS i
                """,
                due,
                active_later,
                now,
                later,
                total,
            )
            await conn.execute("ANALYZE conversations")
        finally:
            await conn.close()
    return asyncio.get_running_loop().time() - started


def _load_sqlite(
    path: str, total: int, due: int, active_later: int, now: datetime, later: datetime
) -> None:
    n, lt = (
        now.replace(tzinfo=None).strftime(SQLITE_TS),
        later.replace(tzinfo=None).strftime(SQLITE_TS),
    )
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            """
            WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)
            INSERT INTO conversations
                (phone, flow, step, purpose, state, next_send_at, attempts,
                 created_at, updated_at)
            SELECT printf('+%d', 15550000000 + i), 'demo', 0, 'question',
                   CASE WHEN i <= ? THEN 'pending'
                        WHEN i <= ? THEN 'in_progress'
                        ELSE 'completed' END,
                   CASE WHEN i <= ? THEN ? WHEN i <= ? THEN ? ELSE NULL END,
                   0, ?, ?
            FROM seq
            """,
            (total, due, due + active_later, due, n, due + active_later, lt, n, n),
        )
        db.commit()
        db.execute("ANALYZE")
        db.commit()
    finally:
        db.close()


async def load_sent_messages(url: str, count: int) -> float:
    """`count` conversations each with one sent message whose wamid is `wamid.B<i>`,
    as the dispatcher leaves them: what status webhooks apply to. Returns seconds."""
    now = datetime.now(UTC)
    later = now + timedelta(days=1)
    started = asyncio.get_running_loop().time()
    if url.startswith("sqlite"):
        await asyncio.to_thread(_sent_sqlite, _sqlite_path(url), count, now, later)
    else:
        conn = await asyncpg.connect(pg_dsn(url), timeout=10)
        try:
            async with conn.transaction():
                await conn.execute(
                    """
                    INSERT INTO conversations
                        (id, phone, flow, step, purpose, state, next_send_at, attempts,
                         created_at, updated_at)
                    SELECT i, '+1555' || lpad(i::text, 7, '0'), 'demo', 1, 'question',
                           'in_progress', $2::timestamptz, 0, $1::timestamptz, $1::timestamptz
                    FROM generate_series(1, $3) AS i
                    """,
                    now,
                    later,
                    count,
                )
                await conn.execute(
                    """
                    INSERT INTO messages
                        (conversation_id, step, purpose, wamid, status, attempts, due_at,
                         sent_at, status_at, created_at, updated_at)
                    SELECT i, 0, 'question', 'wamid.B' || i, 'sent', 1, $1::timestamptz,
                           $1::timestamptz, $1::timestamptz, $1::timestamptz, $1::timestamptz
                    FROM generate_series(1, $2) AS i
                    """,
                    now,
                    count,
                )
                await conn.execute(
                    "SELECT setval(pg_get_serial_sequence('conversations', 'id'), $1)", count
                )
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
    return asyncio.get_running_loop().time() - started


def _sent_sqlite(path: str, count: int, now: datetime, later: datetime) -> None:
    n, lt = (
        now.replace(tzinfo=None).strftime(SQLITE_TS),
        later.replace(tzinfo=None).strftime(SQLITE_TS),
    )
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            """
            WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)
            INSERT INTO conversations
                (id, phone, flow, step, purpose, state, next_send_at, attempts,
                 created_at, updated_at)
            SELECT i, printf('+1555%07d', i), 'demo', 1, 'question', 'in_progress', ?, 0, ?, ?
            FROM seq
            """,
            (count, lt, n, n),
        )
        db.execute(
            """
            WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)
            INSERT INTO messages
                (conversation_id, step, purpose, wamid, status, attempts, due_at, sent_at,
                 status_at, created_at, updated_at)
            SELECT i, 0, 'question', 'wamid.B' || i, 'sent', 1, ?, ?, ?, ?, ?
            FROM seq
            """,
            (count, n, n, n, n, n),
        )
        db.commit()
    finally:
        db.close()


async def load_history_pg(url: str, first: int, count: int, days: int = 30) -> float:
    """One answered (`read`) question message for each of conversations `first` ..
    `first + count - 1`, sent over the past `days` days: the history a long-running
    installation keeps, which `dripline status` and the reports read around. Then
    `VACUUM (ANALYZE)`, what autovacuum does in production (it is off on this server).
    PostgreSQL only. Returns seconds taken."""
    now = datetime.now(UTC)
    started = asyncio.get_running_loop().time()
    conn = await asyncpg.connect(pg_dsn(url), timeout=10)
    try:
        await conn.execute(
            """
            INSERT INTO messages
                (conversation_id, step, purpose, wamid, status, attempts, due_at,
                 sent_at, status_at, created_at, updated_at)
            SELECT i, 0, 'question', 'wamid.H' || i, 'read', 1, t, t, t, t, t
            FROM generate_series($1::bigint, $1::bigint + $2 - 1) AS i,
                 LATERAL (SELECT $3::timestamptz
                          - make_interval(secs => (i % ($4 * 86400))::double precision)
                          AS t) AS at
            """,
            first,
            count,
            now,
            days,
        )
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()
    return asyncio.get_running_loop().time() - started


async def claim_timings(url: str, samples: int, limit: int = 100) -> list[float]:
    """`samples` timed `claim_due(limit)` calls through the store, each released again
    so the due set stays the same; milliseconds, sorted."""
    from dripline.store import open_store

    store = await open_store(url, pool_size=1)
    times: list[float] = []
    try:
        now = datetime.now(UTC)
        for _ in range(samples):
            t0 = time.perf_counter()
            got = await store.claim_due(limit, 60.0, "bench-probe", now)
            times.append((time.perf_counter() - t0) * 1000)
            await store.release([c.id for c in got], "bench-probe")
    finally:
        await store.close()
    return sorted(times)


async def status_counts(url: str) -> dict[str, int]:
    """messages by status, and inbox rows unprocessed / with an error, from one snapshot.

    One snapshot, because the processor marks inbox rows done in the same transaction as
    their status updates: counting messages and then the inbox in two snapshots can see
    "0 pending" while the last batch's statuses are not counted yet.
    """
    if url.startswith("sqlite"):
        return await asyncio.to_thread(_status_counts_sqlite, _sqlite_path(url))
    conn = await asyncpg.connect(pg_dsn(url), timeout=10)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return _counts(
                [(str(r[0]), int(r[1])) for r in await conn.fetch(_COUNT_MESSAGES)],
                tuple(await conn.fetchrow(_COUNT_INBOX)),
            )
    finally:
        await conn.close()


_COUNT_MESSAGES = "SELECT status, count(*) FROM messages GROUP BY status"
_COUNT_INBOX = (
    "SELECT count(*), count(*) FILTER (WHERE processed_at IS NULL), "
    "count(*) FILTER (WHERE error IS NOT NULL) FROM inbox"
)


def _counts(by_status: list[tuple[str, int]], inbox: tuple[int, ...]) -> dict[str, int]:
    out = dict(by_status)
    out["_inbox"], out["_inbox_pending"], out["_inbox_errors"] = (int(n or 0) for n in inbox)
    return out


def _status_counts_sqlite(path: str) -> dict[str, int]:
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN")  # WAL: one read snapshot for both counts
        by_status = [(str(s), int(n)) for s, n in db.execute(_COUNT_MESSAGES)]
        inbox = db.execute(_COUNT_INBOX).fetchone()  # FILTER: SQLite 3.30+
        db.execute("COMMIT")
        return _counts(by_status, tuple(inbox))
    finally:
        db.close()


async def explain_claim(url: str, limit: int) -> list[str]:
    """The plan of the claim's due query (the same WHERE/ORDER/LIMIT the store sends)."""
    active = "state IN ('pending', 'in_progress', 'awaiting_reply')"
    if url.startswith("sqlite"):
        sql = (
            "EXPLAIN QUERY PLAN SELECT id FROM conversations INDEXED BY ix_conversations_due "
            f"WHERE {active} AND next_send_at <= ? "
            "AND (lease_expires_at IS NULL OR lease_expires_at < ?) "
            "ORDER BY next_send_at LIMIT ?"
        )
        now = datetime.now(UTC).replace(tzinfo=None).strftime(SQLITE_TS)

        def run() -> list[str]:
            db = sqlite3.connect(_sqlite_path(url), timeout=30)
            try:
                return [str(r[-1]) for r in db.execute(sql, (now, now, limit))]
            finally:
                db.close()

        return await asyncio.to_thread(run)
    conn = await asyncpg.connect(pg_dsn(url), timeout=10)
    try:
        async with conn.transaction():
            rows = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
                "UPDATE conversations SET lease_owner = 'explain', "
                "lease_expires_at = now() + interval '1 minute' "
                "WHERE id IN (SELECT id FROM conversations "
                f"WHERE {active} AND next_send_at <= now() "
                "AND (lease_expires_at IS NULL OR lease_expires_at < now()) "
                f"ORDER BY next_send_at LIMIT {int(limit)} FOR UPDATE SKIP LOCKED) "
                "RETURNING id"
            )
            plan = [str(r[0]) for r in rows]
            raise _Rollback
    except _Rollback:
        return plan
    finally:
        await conn.close()


class _Rollback(Exception):
    """Undo the EXPLAIN ANALYZE's claim."""
