"""PostgreSQL: the dispatcher's hot statements (claim with the next due time, reserve,
record, lease extension) as functions of one asyncpg connection, for the lane
(`postgres_lane.py`) to run; no SQLAlchemy at run time.

The statements are the SQLAlchemy ones of `sql/dispatch.py` and `postgres.py`, compiled
once for asyncpg (`$n` parameters); the reservation rules are shared
(`sql/reserve_plan.py`). Through SQLAlchemy's asyncio layer each statement cost the
dispatcher 1.2-1.8 ms of CPU (bench/README.md, issue 14); here it is asyncpg's own
prepared-statement path. The claim and its next-due query are one statement (a
data-modifying CTE), so a claim, a record and an extension are one round trip each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ClauseElement,
    Insert,
    Update,
    any_,
    bindparam,
    func,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy import true as sql_true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql.compiler import SQLCompiler

from dripline.store.migrate import VERSION_TABLE, one_revision
from dripline.store.postgres_claim import claim_update, claimed_conversations
from dripline.store.schema import conversations, messages, workers
from dripline.store.sql.core import ACTIVE, CHUNK, chunks, ts
from dripline.store.sql.dispatch import (
    claim_params,
    extend_update,
    heartbeat_values,
    lock_owned_select,
)
from dripline.store.sql.reserve_plan import INSERT_COLUMNS, Key, Prior, key, plan, wanted
from dripline.store.types import (
    NONFINAL_STATUSES,
    Claim,
    Conversation,
    Outcome,
    Reservation,
    ReservationResult,
    WorkerInfo,
)

__all__ = [
    "HotSql",
    "Statement",
    "claim",
    "claim_due",
    "claim_update",
    "claimed_conversations",
    "compiled",
    "extend",
    "heartbeat",
    "live_workers",
    "record",
    "reserve",
]

C = conversations.c
W = workers.c
_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL for asyncpg and the names of its `$1..$n` parameters, in order."""

    sql: str
    names: tuple[str, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[n] for n in self.names]


def compiled(stmt: ClauseElement) -> Statement:
    """A SQLAlchemy statement as asyncpg runs it (SQLAlchemy's asyncpg dialect writes
    `$n` parameters; `positiontup` names them)."""
    c = stmt.compile(dialect=_DIALECT)
    assert isinstance(c, SQLCompiler)
    return Statement(c.string, tuple(c.positiontup or ()))


_NONFINAL = ", ".join(f"'{s}'" for s in NONFINAL_STATUSES)

# One statement writes a whole batch: both updates run in one snapshot, atomically.
_RECORD = text(
    f"""
WITH msg AS (
    UPDATE messages AS m SET
        status = CASE WHEN m.status IN ({_NONFINAL}) THEN v.status ELSE m.status END,
        error_code = CASE WHEN m.status IN ({_NONFINAL}) THEN v.error_code
                          ELSE m.error_code END,
        error_title = CASE WHEN m.status IN ({_NONFINAL}) THEN v.error_title
                           ELSE m.error_title END,
        status_at = CASE WHEN m.status IN ({_NONFINAL}) THEN :now ELSE m.status_at END,
        wamid = COALESCE(v.wamid, m.wamid),
        sent_at = COALESCE(v.sent_at, m.sent_at),
        latency_ms = COALESCE(v.latency_ms, m.latency_ms),
        updated_at = :now
    FROM unnest(
        CAST(:m_id AS BIGINT[]), CAST(:m_status AS TEXT[]), CAST(:m_wamid AS TEXT[]),
        CAST(:m_code AS INTEGER[]), CAST(:m_title AS TEXT[]),
        CAST(:m_sent AS TIMESTAMPTZ[]), CAST(:m_latency AS FLOAT8[])
    ) AS v(id, status, wamid, error_code, error_title, sent_at, latency_ms)
    WHERE m.id = v.id
    RETURNING m.id
), conv AS (
    UPDATE conversations AS c SET
        state = v.state, step = v.step, purpose = v.purpose,
        next_send_at = v.next_send_at, attempts = v.attempts, last_error = v.last_error,
        wa_id = COALESCE(v.wa_id, c.wa_id),
        lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
    FROM unnest(
        CAST(:c_id AS BIGINT[]), CAST(:c_state AS TEXT[]), CAST(:c_step AS INTEGER[]),
        CAST(:c_purpose AS TEXT[]), CAST(:c_next AS TIMESTAMPTZ[]),
        CAST(:c_attempts AS INTEGER[]), CAST(:c_error AS TEXT[]), CAST(:c_wa AS TEXT[])
    ) AS v(id, state, step, purpose, next_send_at, attempts, last_error, wa_id)
    WHERE c.id = v.id AND c.lease_owner = :worker AND c.lease_expires_at >= :now
    RETURNING c.id
)
SELECT (SELECT count(*) FROM conv), (SELECT count(*) FROM msg)
"""
)

# A reservation's prior message rows, looked up by their unique key one by one (the
# LIMIT keeps each lookup a subquery the planner cannot turn into a join). Written as a
# join, or as `conversation_id IN (...)`, the plan depended on the statistics of
# `messages`: with none (a new table, autovacuum off or not yet run) the planner
# guessed half the table matched and read every row of it for each reservation, a cost
# that grew with every message sent (issue 14: a drain's rate fell by two thirds).
# FOR UPDATE: a webhook must not change a status between our read and our write.
_PRIOR = text(
    """
SELECT m.id, m.conversation_id, m.step, m.purpose, m.status, m.attempts, m.wamid,
       m.error_code, m.status_at, m.reserved_at
FROM unnest(CAST(:k_conv AS BIGINT[]), CAST(:k_step AS INTEGER[]), CAST(:k_purpose AS TEXT[]))
     AS k(conversation_id, step, purpose)
CROSS JOIN LATERAL (
    SELECT m.id, m.conversation_id, m.step, m.purpose, m.status, m.attempts, m.wamid,
           m.error_code, m.status_at, COALESCE(m.reserved_at, m.created_at) AS reserved_at
    FROM messages AS m
    WHERE m.conversation_id = k.conversation_id AND m.step = k.step AND m.purpose = k.purpose
    LIMIT 1
    FOR UPDATE
) AS m
"""
)


def _array_of(column: str) -> str:
    return f"CAST(:{column} AS {messages.c[column].type.compile(dialect=_DIALECT)}[])"


# The plan's inserts, one array per column (`INSERT_COLUMNS`), in one statement.
_INSERT = text(
    f"INSERT INTO messages ({', '.join(INSERT_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(_array_of(c) for c in INSERT_COLUMNS)}) "
    "RETURNING id, conversation_id, step, purpose"
)
# The plan's updates (`ReservePlan.updates`: b_id, b_status, b_attempts, b_reserved).
_UPDATE_RESERVED = text(
    """
UPDATE messages AS m SET status = v.status, attempts = v.attempts, status_at = :now,
    updated_at = :now, reserved_at = v.reserved_at
FROM unnest(CAST(:u_id AS BIGINT[]), CAST(:u_status AS TEXT[]), CAST(:u_attempts AS INTEGER[]),
            CAST(:u_reserved AS TIMESTAMPTZ[])) AS v(id, status, attempts, reserved_at)
WHERE m.id = v.id
"""
)

_IDS = C.id == any_(bindparam("b_ids", type_=ARRAY(BigInteger)))


class HotSql:
    """The lane's statements, compiled once per store (on first use: start-up does not
    pay for them)."""

    def __init__(self, claim: Update, upsert_worker: Insert) -> None:
        # The claim (the store's, with SKIP LOCKED) and the next due time in one
        # statement. The outer query reads the snapshot from before the claim's update,
        # so it leaves out the rows just claimed by id; a separate `next_due_at` after
        # the update would not see them as unleased either. One row at least: with
        # nothing claimed, the conversation columns are NULL.
        self.claim_only = compiled(claim)  # `claim_due`: no next due time
        claimed = claim.cte("claimed")
        next_due = (
            select(func.min(C.next_send_at))
            .where(
                ACTIVE,
                or_(C.lease_expires_at.is_(None), C.lease_expires_at < ts("b_now")),
                C.id.not_in(select(claimed.c.id)),
            )
            .scalar_subquery()
        )
        one = select(next_due.label("next_due")).subquery("n")
        self.claim = compiled(
            select(*claimed.c, one.c.next_due).select_from(one.outerjoin(claimed, sql_true()))
        )
        # Serializes reservations per conversation; NO KEY keeps FK inserts unblocked.
        self.lock_owned = compiled(lock_owned_select(_IDS).with_for_update(key_share=True))
        self.extend = compiled(extend_update(_IDS))
        self.prior = compiled(_PRIOR)
        self.insert = compiled(_INSERT)
        self.update_reserved = compiled(_UPDATE_RESERVED)
        self.record = compiled(_RECORD)
        # The heartbeat's upsert and the live workers in one statement; the outer query
        # reads the snapshot from before the upsert, so this worker's row comes from
        # its RETURNING.
        up = (
            upsert_worker.values({c.name: bindparam(f"w_{c.name}", type_=c.type) for c in W})
            .returning(*W)
            .cte("up")
        )
        self.heartbeat = compiled(
            union_all(
                select(up).where(up.c.heartbeat_at >= ts("b_since")),
                select(workers).where(W.heartbeat_at >= ts("b_since"), W.id != bindparam("w_id")),
            )
        )
        # A busy dispatcher's look at the live workers every SHARE_LOOK_S (control.py).
        self.live_workers = compiled(select(workers).where(W.heartbeat_at >= ts("b_since")))


async def schema_revision(conn: Any) -> str | None:
    """`migrate.current_revision` on the lane: a dispatcher's first statements (issue 14,
    start-up; see `PostgresStore.lane_revision`)."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", VERSION_TABLE):
        return None
    rows = await conn.fetch(f"SELECT version_num FROM {VERSION_TABLE}")
    return one_revision([r[0] for r in rows])


async def _fetch(conn: Any, stmt: Statement, params: Mapping[str, Any]) -> list[Any]:
    rows: list[Any] = await conn.fetch(stmt.sql, *stmt.args(params))
    return rows


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use aware UTC datetimes")
    return value


async def claim(
    conn: Any, sql: HotSql, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
) -> Claim:
    """`Store.claim_next`."""
    params = claim_params(max(limit, 0), lease_ttl_s, worker_id, _aware(now) or now)
    rows = await _fetch(conn, sql.claim, params)
    until = params["b_until"].astimezone(UTC)
    claimed = claimed_conversations(rows if rows[0][0] is not None else (), worker_id, until)
    return Claim(claimed, rows[0][-1])


async def claim_due(
    conn: Any, sql: HotSql, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
) -> list[Conversation]:
    """`Store.claim_due` (limit > 0)."""
    params = claim_params(limit, lease_ttl_s, worker_id, _aware(now) or now)
    rows = await _fetch(conn, sql.claim_only, params)
    return claimed_conversations(rows, worker_id, params["b_until"].astimezone(UTC))


async def reserve(
    conn: Any, sql: HotSql, items: Sequence[Reservation], worker_id: str, now: datetime
) -> list[ReservationResult]:
    """`Store.reserve`, as `DispatchSql.reserve` does it; inside a transaction."""
    _aware(now)
    cids = sorted({i.conversation_id for i in items})
    rows = await _fetch(conn, sql.lock_owned, {"b_ids": cids, "b_w": worker_id, "b_now": now})
    owned = {r[0] for r in rows}
    prior: dict[Key, Any] = {}
    for page in chunks(sorted(wanted(items, owned)), CHUNK):
        params = {
            "k_conv": [k[0] for k in page],
            "k_step": [k[1] for k in page],
            "k_purpose": [k[2] for k in page],
        }
        for r in await _fetch(conn, sql.prior, params):
            row = Prior(*r)
            prior[(row.conversation_id, row.step, row.purpose)] = row
    todo = plan(items, owned, prior, now)
    results = todo.results
    if todo.inserts:
        columns = {c: [row[c] for row in todo.inserts] for c in INSERT_COLUMNS}
        for mid, cid, step, purpose in await _fetch(conn, sql.insert, columns):
            results[(cid, step, purpose)] = ReservationResult(
                cid, mid, True, None, 1, reserved_at=now
            )
    if todo.updates:
        u = todo.updates
        params = {
            "now": now,
            "u_id": [r["b_id"] for r in u],
            "u_status": [r["b_status"] for r in u],
            "u_attempts": [r["b_attempts"] for r in u],
            "u_reserved": [r["b_reserved"] for r in u],
        }
        await conn.execute(sql.update_reserved.sql, *sql.update_reserved.args(params))
    return [results[key(i)] for i in items]


async def record(
    conn: Any, sql: HotSql, outcomes: Sequence[Outcome], worker_id: str, now: datetime
) -> int:
    """`Store.record_results`: one statement."""
    msgs = [o.message for o in outcomes if o.message is not None]
    convs = [o.conversation for o in outcomes]
    params = {
        "now": _aware(now),
        "worker": worker_id,
        "m_id": [m.message_id for m in msgs],
        "m_status": [m.status for m in msgs],
        "m_wamid": [m.wamid for m in msgs],
        "m_code": [m.error_code for m in msgs],
        "m_title": [m.error_title for m in msgs],
        "m_sent": [_aware(m.sent_at) for m in msgs],
        "m_latency": [m.latency_ms for m in msgs],
        "c_id": [c.conversation_id for c in convs],
        "c_state": [c.state for c in convs],
        "c_step": [c.step for c in convs],
        "c_purpose": [c.purpose for c in convs],
        "c_next": [_aware(c.next_send_at) for c in convs],
        "c_attempts": [c.attempts for c in convs],
        "c_error": [c.last_error for c in convs],
        "c_wa": [c.wa_id for c in convs],
    }
    rows = await _fetch(conn, sql.record, params)
    return int(rows[0][0])


async def extend(
    conn: Any,
    sql: HotSql,
    conversation_ids: Sequence[int],
    worker_id: str,
    lease_ttl_s: float,
    now: datetime,
) -> list[int]:
    """`Store.extend_leases`: one statement."""
    params = {
        "b_ids": sorted(conversation_ids),
        "b_w": worker_id,
        "b_now": _aware(now),
        "b_until": now + timedelta(seconds=lease_ttl_s),
    }
    return sorted(r[0] for r in await _fetch(conn, sql.extend, params))


async def heartbeat(
    conn: Any, sql: HotSql, worker: WorkerInfo, live_after_s: float
) -> list[WorkerInfo]:
    """`Store.heartbeat`: one statement."""
    values = heartbeat_values(worker)
    params = {f"w_{k}": v for k, v in values.items()}
    params["w_stats"] = json.dumps(values["stats"])  # SQLAlchemy's JSON: None is 'null'
    _aware(worker.heartbeat_at)
    params["b_since"] = worker.heartbeat_at - timedelta(seconds=live_after_s)
    return _workers(await _fetch(conn, sql.heartbeat, params))


async def live_workers(
    conn: Any, sql: HotSql, now: datetime, live_after_s: float
) -> list[WorkerInfo]:
    """`Store.live_workers`: one statement on the lane, not through SQLAlchemy (read
    every 0.1 s while a backlog is queued)."""
    _aware(now)
    since = now - timedelta(seconds=live_after_s)
    return _workers(await _fetch(conn, sql.live_workers, {"b_since": since}))


async def unregister(conn: Any, worker_id: str) -> None:
    """`Store.unregister` on the lane: a `run --once` that sent on the lane then needs no
    pooled connection at all (one more connect, SQLAlchemy's dialect set-up, a
    transaction) just to remove its row."""
    await conn.execute(f"DELETE FROM {workers.name} WHERE {W.id.name} = $1", worker_id)


def _workers(rows: Sequence[Any]) -> list[WorkerInfo]:
    live = [
        WorkerInfo(
            id=r[0],
            hostname=r[1],
            pid=r[2],
            started_at=r[3],
            heartbeat_at=r[4],
            rate_per_s=float(r[5]),
            concurrency=int(r[6]),
            policy=r[7],
            stats=json.loads(r[8]) if r[8] is not None else {},
        )
        for r in rows
    ]
    return sorted(live, key=lambda w: w.id)
