"""SQLite: the dispatcher's hot transactions in driver SQL (claim with the next due
time, reserve, record), as functions of one `sqlite3.Connection` for the lane
(`sqlite_lane.py`) to run whole on its thread. The statements are those of
`sql/dispatch.py`; the reservation rules are shared (`sql/reserve_plan.py`); values
convert as SQLAlchemy's types would (UTC text, JSON).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect

from dripline.store.migrate import VERSION_TABLE, one_revision
from dripline.store.schema import ACTIVE_SQL, UTCDateTime, sqlite_timestamp, workers
from dripline.store.sql.core import CHUNK, CONVERSATION_COLUMNS, INSERT_PAGE, chunks
from dripline.store.sql.dispatch import claimed_rows, heartbeat_values
from dripline.store.sql.reserve_plan import INSERT_COLUMNS, Key, Prior, key, plan, wanted
from dripline.store.types import (
    NONFINAL_STATUSES,
    Claim,
    Outcome,
    Reservation,
    ReservationResult,
    WorkerInfo,
)

__all__ = [
    "DUE_IDS_SQL",
    "RECORD_CONVERSATION_SQL",
    "RECORD_MESSAGE_SQL",
    "claim",
    "extend_leases",
    "heartbeat",
    "live_workers",
    "record",
    "record_rows",
    "reserve",
]

# record_results in driver SQL with plain tuples: through SQLAlchemy's executemany every
# value of every row passes a bind processor. Measured alone (50 outcomes a batch,
# 10,000 sends, three alternating runs): 0.14 -> 0.105 ms of CPU per message. Same
# statements as sql/dispatch.py's _UPDATE_MESSAGE and _UPDATE_CONVERSATION; SQLite
# evaluates every SET expression against the row as it was, so each CASE sees the old
# status. The test is equalities joined by OR, not `status IN (...)`: SQLite builds an
# ephemeral table for each IN list at every execution, which executemany makes once
# per row: four per row here, half the statement's CPU (20.5 -> 10 us a row, measured
# alone on 20,000 rows in batches of 50).
_NONFINAL = "({})".format(" OR ".join(f"status = '{s}'" for s in NONFINAL_STATUSES))
RECORD_MESSAGE_SQL = f"""
UPDATE messages SET
    status = CASE WHEN {_NONFINAL} THEN ? ELSE status END,
    error_code = CASE WHEN {_NONFINAL} THEN ? ELSE error_code END,
    error_title = CASE WHEN {_NONFINAL} THEN ? ELSE error_title END,
    wamid = COALESCE(?, wamid),
    sent_at = COALESCE(?, sent_at),
    latency_ms = COALESCE(?, latency_ms),
    status_at = CASE WHEN {_NONFINAL} THEN ? ELSE status_at END,
    updated_at = ?
WHERE id = ?
"""
RECORD_CONVERSATION_SQL = """
UPDATE conversations SET
    state = ?, step = ?, purpose = ?, next_send_at = ?, attempts = ?, last_error = ?,
    wa_id = COALESCE(?, wa_id), lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
WHERE id = ? AND lease_owner = ? AND lease_expires_at >= ?
"""


# The claim in driver SQL for the lane (the same statement `_due_ids` gives SQLAlchemy).
# Without ANALYZE statistics SQLite prefers ix_conversations_state and sorts every
# active row; the partial index walks due rows in order and stops after `limit`.
DUE_IDS_SQL = (
    "SELECT id FROM conversations INDEXED BY ix_conversations_due "
    f"WHERE {ACTIVE_SQL} AND next_send_at <= :b_now "
    "AND (lease_expires_at IS NULL OR lease_expires_at < :b_now) "
    "ORDER BY next_send_at LIMIT :b_limit"
)
CLAIM_SQL = (
    "UPDATE conversations SET lease_owner = :b_w, lease_expires_at = :b_until "
    f"WHERE id IN ({DUE_IDS_SQL}) "
    f"RETURNING {', '.join(c.name for c in CONVERSATION_COLUMNS)}"
)
# The earliest due time left, walking the due index in order from its start: as
# `min(next_send_at)` SQLite chose ix_conversations_state and read every active row:
# a one-row claim with 2,000 pending cost 0.36 ms of the lane thread's CPU (measured
# alone, 600 claims), growing with the backlog; this way 0.076 ms (the walk skips only
# leased rows).
NEXT_DUE_SQL = (
    "SELECT next_send_at FROM conversations INDEXED BY ix_conversations_due "
    f"WHERE {ACTIVE_SQL} AND next_send_at IS NOT NULL "
    "AND (lease_expires_at IS NULL OR lease_expires_at < ?) "
    "ORDER BY next_send_at LIMIT 1"
)
# Each column's conversion from the driver's value, as SQLAlchemy's result would make it
# (UTC text to aware datetimes, JSON text to dicts).
_SQLITE = sqlite_dialect.dialect()
_CONVERSIONS = [
    c.type.dialect_impl(_SQLITE).result_processor(_SQLITE, None) for c in CONVERSATION_COLUMNS
]
_UTC = UTCDateTime()


def _as_datetime(value: str | None) -> datetime | None:
    return _UTC.process_result_value(value, _SQLITE)


def _conversation(row: Sequence[Any]) -> list[Any]:
    return [v if f is None or v is None else f(v) for f, v in zip(_CONVERSIONS, row, strict=True)]


def record_rows(
    outcomes: Sequence[Outcome], worker_id: str, now: datetime
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """record_results' parameters for RECORD_MESSAGE_SQL and RECORD_CONVERSATION_SQL."""
    ts = sqlite_timestamp
    at = ts(now)
    msg_rows = [
        (m.status, m.error_code, m.error_title, m.wamid, ts(m.sent_at), m.latency_ms, at, at,
         m.message_id)
        for m in (o.message for o in outcomes)
        if m is not None
    ]  # fmt: skip
    conv_rows = [
        (c.state, c.step, c.purpose, ts(c.next_send_at), c.attempts, c.last_error,
         c.wa_id, at, c.conversation_id, worker_id, at)
        for c in (o.conversation for o in outcomes)
    ]  # fmt: skip
    return msg_rows, conv_rows


def claim(
    conn: sqlite3.Connection, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
) -> Claim:
    """`Store.claim_next`."""
    at = sqlite_timestamp(now)
    params = {
        "b_now": at,
        "b_limit": limit,
        "b_w": worker_id,
        "b_until": sqlite_timestamp(now + timedelta(seconds=lease_ttl_s)),
    }
    rows = conn.execute(CLAIM_SQL, params).fetchall() if limit > 0 else []
    first = conn.execute(NEXT_DUE_SQL, (at,)).fetchone()
    next_due = None if first is None else first[0]
    return Claim(claimed_rows([_conversation(r) for r in rows]), _as_datetime(next_due))


def record(
    conn: sqlite3.Connection, outcomes: Sequence[Outcome], worker_id: str, now: datetime
) -> int:
    """`Store.record_results`."""
    msg_rows, conv_rows = record_rows(outcomes, worker_id, now)
    if msg_rows:
        conn.executemany(RECORD_MESSAGE_SQL, msg_rows)
    return max(conn.executemany(RECORD_CONVERSATION_SQL, conv_rows).rowcount, 0)


_LOCK_OWNED_SQL = (
    "SELECT id FROM conversations WHERE id IN ({}) "
    "AND lease_owner = ? AND lease_expires_at >= ? ORDER BY id"
)
_PRIOR_SQL = (
    "SELECT id, conversation_id, step, purpose, status, attempts, wamid, error_code, "
    "status_at, COALESCE(reserved_at, created_at) FROM messages WHERE conversation_id IN ({})"
)
_INSERT_TIMES = {"due_at", "status_at", "created_at", "updated_at", "reserved_at"}
_INSERT_ROW = "({})".format(", ".join("?" * len(INSERT_COLUMNS)))
_INSERT_SQL = (
    f"INSERT INTO messages ({', '.join(INSERT_COLUMNS)}) VALUES {{}} "
    "RETURNING id, conversation_id, step, purpose"
)
_UPDATE_RESERVED_SQL = (
    "UPDATE messages SET status = ?, attempts = ?, status_at = ?, updated_at = ?, "
    "reserved_at = ? WHERE id = ?"
)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def reserve(
    conn: sqlite3.Connection, items: Sequence[Reservation], worker_id: str, now: datetime
) -> list[ReservationResult]:
    """`Store.reserve`, as `DispatchSql.reserve` does it."""
    at = sqlite_timestamp(now)
    owned: set[int] = set()
    for chunk in chunks(sorted({i.conversation_id for i in items})):
        sql = _LOCK_OWNED_SQL.format(_marks(len(chunk)))
        owned.update(r[0] for r in conn.execute(sql, (*chunk, worker_id, at)))
    keys = wanted(items, owned)
    prior: dict[Key, Any] = {}
    for chunk in chunks(sorted({k[0] for k in keys}), CHUNK):
        for r in conn.execute(_PRIOR_SQL.format(_marks(len(chunk))), tuple(chunk)):
            mid, cid, step, purpose, status, attempts, wamid, code, status_at, reserved = r
            row = Prior(
                mid, cid, step, purpose, status, attempts, wamid, code,
                _as_datetime(status_at), _as_datetime(reserved),
            )  # fmt: skip
            k = (row.conversation_id, row.step, row.purpose)
            if k in keys:
                prior[k] = row
    todo = plan(items, owned, prior, now)
    results = todo.results
    ts = sqlite_timestamp
    # Each row has five times, four of them `now` and the due time often shared: the
    # texts by value (sqlite_timestamp remembers only the last one, and due_at and now
    # alternate), not 2 conversions a row.
    texts: dict[datetime, str | None] = {now: at}

    def text(value: datetime | None) -> str | None:
        if value is None:
            return None
        found = texts.get(value)
        if found is None:
            found = texts[value] = ts(value)
        return found

    for page in chunks(todo.inserts, INSERT_PAGE):
        values = [
            text(row[c]) if c in _INSERT_TIMES else row[c] for row in page for c in INSERT_COLUMNS
        ]
        sql = _INSERT_SQL.format(", ".join([_INSERT_ROW] * len(page)))
        for mid, cid, step, purpose in conn.execute(sql, values).fetchall():
            results[(cid, step, purpose)] = ReservationResult(
                cid, mid, True, None, 1, reserved_at=now
            )
    if todo.updates:
        conn.executemany(
            _UPDATE_RESERVED_SQL,
            [
                (u["b_status"], u["b_attempts"], at, at, ts(u["b_reserved"]), u["b_id"])
                for u in todo.updates
            ],
        )
    return [results[key(i)] for i in items]


# The heartbeat and the lease extension in driver SQL (the same statements as
# sql/dispatch.py's upsert, live-workers and extend; values converted by the columns'
# own processors). Through SQLAlchemy they cost 2.7 and 1.5 ms of CPU every 2 s, about
# 0.2 ms per message at 10 msg/s (bench/README.md, scenario 13).
_WORKER_COLUMNS = (
    "id", "hostname", "pid", "started_at", "heartbeat_at", "rate_per_s", "concurrency",
    "policy", "stats",
)  # fmt: skip
_WORKER_TYPES = [workers.c[name].type.dialect_impl(_SQLITE) for name in _WORKER_COLUMNS]
_WORKER_BIND = [t.bind_processor(_SQLITE) for t in _WORKER_TYPES]
_WORKER_RESULT = [t.result_processor(_SQLITE, None) for t in _WORKER_TYPES]
_UPSERT_WORKER_SQL = (
    f"INSERT INTO workers ({', '.join(_WORKER_COLUMNS)}) "
    f"VALUES ({_marks(len(_WORKER_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _WORKER_COLUMNS if c != "id")
)
_LIVE_WORKERS_SQL = f"SELECT {', '.join(_WORKER_COLUMNS)} FROM workers WHERE heartbeat_at >= ?"
_EXTEND_SQL = (
    "UPDATE conversations SET lease_expires_at = ? "
    "WHERE id IN ({}) AND lease_owner = ? AND lease_expires_at >= ? RETURNING id"
)


def heartbeat(
    conn: sqlite3.Connection, worker: WorkerInfo, live_after_s: float
) -> list[WorkerInfo]:
    """`Store.heartbeat`."""
    values = heartbeat_values(worker)
    row = [
        values[c] if f is None else f(values[c])
        for c, f in zip(_WORKER_COLUMNS, _WORKER_BIND, strict=True)
    ]
    conn.execute(_UPSERT_WORKER_SQL, row)
    return live_workers(conn, worker.heartbeat_at, live_after_s)


def schema_revision(conn: sqlite3.Connection) -> str | None:
    """`migrate.current_revision` on the lane (`SqliteStore.lane_revision`)."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
    ).fetchone()
    if found is None:
        return None
    return one_revision([r[0] for r in conn.execute(f"SELECT version_num FROM {VERSION_TABLE}")])


def unregister(conn: sqlite3.Connection, worker_id: str) -> None:
    """`Store.unregister` on the lane: a `run --once` then never opens the pool's
    connection (aiosqlite's thread, SQLAlchemy's) just to remove its row."""
    conn.execute(f"DELETE FROM {workers.name} WHERE id = ?", (worker_id,))


def live_workers(conn: sqlite3.Connection, now: datetime, live_after_s: float) -> list[WorkerInfo]:
    """`Store.live_workers`: the workers that beat within `live_after_s` of `now`, by id.

    A busy dispatcher reads them every SHARE_LOOK_S (0.1 s): through SQLAlchemy and
    aiosqlite that read was about 5% of its CPU at full speed (py-spy, scenario 1's
    SQLite drain), one plain statement here."""
    since = sqlite_timestamp(now - timedelta(seconds=live_after_s))
    live = []
    for r in conn.execute(_LIVE_WORKERS_SQL, (since,)):
        v: list[Any] = [
            x if f is None or x is None else f(x) for f, x in zip(_WORKER_RESULT, r, strict=True)
        ]
        wid, hostname, pid, started_at, heartbeat_at, rate, concurrency, policy, stats = v
        live.append(
            WorkerInfo(
                id=wid,
                hostname=hostname,
                pid=pid,
                started_at=started_at,
                heartbeat_at=heartbeat_at,
                rate_per_s=float(rate),
                concurrency=int(concurrency),
                policy=policy,
                stats=stats or {},
            )
        )
    return sorted(live, key=lambda w: w.id)


def extend_leases(
    conn: sqlite3.Connection,
    conversation_ids: Sequence[int],
    worker_id: str,
    lease_ttl_s: float,
    now: datetime,
) -> list[int]:
    """`Store.extend_leases`."""
    at = sqlite_timestamp(now)
    until = sqlite_timestamp(now + timedelta(seconds=lease_ttl_s))
    extended: list[int] = []
    for chunk in chunks(sorted(conversation_ids)):
        sql = _EXTEND_SQL.format(_marks(len(chunk)))
        extended.extend(r[0] for r in conn.execute(sql, (until, *chunk, worker_id, at)))
    return sorted(extended)
