"""Read-only queries for the operator's view: `dripline status`, the dashboard, metrics.

Every query is bounded so it stays fast on a table of millions of rows:

- backlog counts walk the partial index `ix_conversations_due` (active rows only, which
  is the working set, not the history) up to an hour ahead;
- throughput walks `ix_messages_sent_at` over at most the last 15 minutes;
- lag percentiles read the newest `lag_sample` sends by `ix_messages_sent_at`;
- errors read rows still in an error state (`ix_messages_status`) among the newest
  `error_scan` message ids, updated within the window;
- conversations by state is one `GROUP BY` over `ix_conversations_state` (an index-only
  scan on PostgreSQL), the one query whose cost grows with the table: callers that poll
  refresh it less often.

Nothing here writes; reads run in the store's read transactions (on SQLite a deferred
BEGIN, so they never take the write lock a dispatcher needs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal_column, or_, select, text
from sqlalchemy.pool import QueuePool

from dripline.store.base import Store
from dripline.store.schema import (
    ACTIVE_SQL,
    CONVERSATION_STATES,
    conversations,
    messages,
    workers,
)
from dripline.store.sql import SqlStore

__all__ = [
    "THROUGHPUT_WINDOWS_S",
    "BacklogSnapshot",
    "ErrorCount",
    "LagSummary",
    "LiveWorker",
    "PoolUsage",
    "backlog_snapshot",
    "conversations_by_state",
    "error_counts",
    "lag_summary",
    "live_workers",
    "pool_usage",
    "sent_counts",
]

C = conversations.c
M = messages.c
W = workers.c

# Throughput windows, as `dripline status` shows them (like a load average).
THROUGHPUT_WINDOWS_S = (60, 300, 900)
# Message statuses a row can hold an error in: retry pending, outcome unknown, failed.
_ERROR_STATUSES = ("pending", "unknown", "failed")
# Literal, like ACTIVE_SQL: a bound IN list would hide the partial index from planners.
_ACTIVE = text(ACTIVE_SQL)


@dataclass(frozen=True, slots=True)
class BacklogSnapshot:
    """What is waiting: due now (unleased), overdue by more than a minute, due within
    the next hour (not yet due), and leased (claimed, being sent)."""

    due_now: int
    overdue_1m: int
    due_next_hour: int
    leased: int


@dataclass(frozen=True, slots=True)
class LagSummary:
    """Schedule lag (sent_at minus due_at) of the newest `samples` sends in the window."""

    samples: int
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float
    latency_p50_ms: float
    latency_p99_ms: float


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """Messages currently in an error state with this code and status."""

    code: int | None
    status: str
    count: int


@dataclass(frozen=True, slots=True)
class LiveWorker:
    """A dispatcher whose heartbeat is recent."""

    id: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    rate_per_s: float
    concurrency: int
    policy: str
    stats: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (datetimes as ISO strings)."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["heartbeat_at"] = self.heartbeat_at.isoformat()
        data["stats"] = dict(self.stats)
        return data


@dataclass(frozen=True, slots=True)
class PoolUsage:
    in_use: int
    size: int


def _sql(store: Store) -> SqlStore:
    if not isinstance(store, SqlStore):
        raise TypeError(f"status queries need an SQL store, not {type(store).__name__}")
    return store


def pool_usage(store: Store) -> PoolUsage | None:
    """Connections checked out of the store's pool now (no query); None when the pool
    does not count them (SQLite in memory uses one static connection)."""
    if not isinstance(store, SqlStore):
        return None
    pool = store._engine.pool
    if not isinstance(pool, QueuePool):
        return None
    return PoolUsage(in_use=pool.checkedout(), size=pool.size())


def _count(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


async def backlog_snapshot(store: Store, now: datetime) -> BacklogSnapshot:
    """Backlog counts from the active rows only, via the partial due index.

    Cheaper than `Store.backlog` (which also counts every state over the whole table):
    this one is safe to poll every few seconds.
    """
    sql = _sql(store)
    unleased = or_(C.lease_expires_at.is_(None), C.lease_expires_at < now)
    stmt = select(
        _count(and_(unleased, C.next_send_at <= now)),
        _count(and_(unleased, C.next_send_at <= now - timedelta(minutes=1))),
        _count(C.next_send_at > now),
        _count(C.lease_expires_at >= now),
    ).where(_ACTIVE, C.next_send_at <= now + timedelta(hours=1))
    async with sql._read() as conn:
        row = (await conn.execute(stmt)).one()
    return BacklogSnapshot(
        due_now=int(row[0]), overdue_1m=int(row[1]), due_next_hour=int(row[2]), leased=int(row[3])
    )


async def conversations_by_state(store: Store) -> dict[str, int]:
    """Conversation counts for every state (zero included)."""
    sql = _sql(store)
    stmt = select(C.state, func.count()).group_by(C.state)
    async with sql._read() as conn:
        rows = (await conn.execute(stmt)).all()
    counts = dict.fromkeys(CONVERSATION_STATES, 0)
    for state, n in rows:
        counts[state] = int(n)
    return counts


async def sent_counts(
    store: Store, now: datetime, windows_s: Sequence[int] = THROUGHPUT_WINDOWS_S
) -> dict[int, int]:
    """Messages sent in each trailing window ending at `now` (one index range scan)."""
    sql = _sql(store)
    longest = max(windows_s)
    columns = [_count(M.sent_at > now - timedelta(seconds=w)) for w in windows_s]
    stmt = select(*columns).where(M.sent_at > now - timedelta(seconds=longest), M.sent_at <= now)
    async with sql._read() as conn:
        row = (await conn.execute(stmt)).one()
    return {w: int(v) for w, v in zip(windows_s, row, strict=True)}


def _nearest_rank(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]


async def lag_summary(
    store: Store, now: datetime, *, window_s: float = 300.0, sample: int = 10_000
) -> LagSummary:
    """Lag and latency percentiles of the newest `sample` sends within `window_s`.

    Percentiles are computed here rather than in SQL: SQLite has no percentile function,
    and the sample is bounded, so the result is the same on both backends.
    """
    sql = _sql(store)
    stmt = (
        select(M.sent_at, M.due_at, M.latency_ms)
        .where(M.sent_at > now - timedelta(seconds=window_s), M.sent_at <= now)
        .order_by(M.sent_at.desc())
        .limit(sample)
    )
    async with sql._read() as conn:
        rows = (await conn.execute(stmt)).all()
    lags = sorted(
        max(0.0, (sent - due).total_seconds()) for sent, due, _ in rows if due is not None
    )
    latencies = sorted(float(lat) for _, _, lat in rows if lat is not None)
    return LagSummary(
        samples=len(lags),
        p50_s=_nearest_rank(lags, 0.5),
        p90_s=_nearest_rank(lags, 0.9),
        p99_s=_nearest_rank(lags, 0.99),
        max_s=lags[-1] if lags else 0.0,
        latency_p50_ms=_nearest_rank(latencies, 0.5),
        latency_p99_ms=_nearest_rank(latencies, 0.99),
    )


async def error_counts(
    store: Store, now: datetime, *, window_s: float = 900.0, error_scan: int = 200_000
) -> list[ErrorCount]:
    """Messages in an error state (failed, retry pending, outcome unknown) updated within
    `window_s`, by code and status, most frequent first.

    Bounded twice: by status (`ix_messages_status`; a healthy table is mostly sent) and
    by id (only the newest `error_scan` messages), so a bad day cannot make it slow.
    """
    sql = _sql(store)
    newest = select(func.max(M.id)).scalar_subquery()
    statuses = M.status.in_([literal_column(f"'{s}'") for s in _ERROR_STATUSES])
    stmt = (
        select(M.error_code, M.status, func.count())
        .where(
            statuses,
            or_(M.error_code.is_not(None), M.error_title.is_not(None)),
            M.updated_at > now - timedelta(seconds=window_s),
            M.id > newest - error_scan,
        )
        .group_by(M.error_code, M.status)
    )
    async with sql._read() as conn:
        rows = (await conn.execute(stmt)).all()
    found = [ErrorCount(code=code, status=status, count=int(n)) for code, status, n in rows]
    found.sort(key=lambda e: (-e.count, e.code if e.code is not None else -1, e.status))
    return found


async def live_workers(
    store: Store, now: datetime, *, live_after_s: float = 10.0
) -> list[LiveWorker]:
    """Workers whose heartbeat is within `live_after_s` of `now`, by id."""
    sql = _sql(store)
    stmt = (
        select(workers)
        .where(W.heartbeat_at >= now - timedelta(seconds=live_after_s))
        .order_by(W.id)
    )
    async with sql._read() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        LiveWorker(
            id=r.id,
            hostname=r.hostname,
            pid=r.pid,
            started_at=r.started_at,
            heartbeat_at=r.heartbeat_at,
            rate_per_s=float(r.rate_per_s),
            concurrency=int(r.concurrency),
            policy=r.policy,
            stats=r.stats or {},
        )
        for r in rows
    ]
