"""Read-only queries for the operator's view: `dripline status`, the dashboard, metrics,
the planner's latency samples.

Every query but `backlog` (one pass over the table, for the dispatcher's occasional
check and the demo) is bounded so it stays fast on a table of millions of rows:

- backlog snapshots walk the partial index `ix_conversations_due` (active rows only, which
  is the working set, not the history) up to an hour ahead;
- throughput walks `ix_messages_sent_at` over at most the last 15 minutes;
- lag percentiles read the newest `lag_sample` sends by `ix_messages_sent_at`;
- errors read rows still in an error state (`ix_messages_status`) among the newest
  `error_scan` message ids, updated within the window;
- conversations by state is one `GROUP BY` over `ix_conversations_state` (an index-only
  scan on PostgreSQL), whose cost grows with the table: callers that poll refresh it
  less often.

Nothing here writes; reads run in the store's read transactions (on SQLite a deferred
BEGIN, so they never take the write lock a dispatcher needs).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, case, func, literal_column, or_, select, text
from sqlalchemy.pool import QueuePool

from dripline.store.computed import state_estimates, summarize_sends
from dripline.store.schema import (
    CONVERSATION_STATES,
    conversations,
    inbox,
    messages,
    suppressions,
    workers,
)
from dripline.store.sql.core import (
    ACTIVE,
    CONVERSATION_COLUMNS,
    INBOUND_COLUMNS,
    MESSAGE_COLUMNS,
    SqlCore,
    conversation_from_row,
    inbound_from_row,
    message_from_row,
    ts,
    worker_from_row,
)
from dripline.store.types import THROUGHPUT_WINDOWS_S, InboxEntry, Suppression, WorkerInfo

if TYPE_CHECKING:
    from dripline.store.report_types import (
        BacklogCounts,
        BacklogSnapshot,
        ErrorCount,
        LagSummary,
        PoolUsage,
        StoreSnapshot,
    )

__all__ = ["LATENCY_SAMPLES", "OperatorSql"]

C = conversations.c
M = messages.c
W = workers.c

# Message statuses a row can hold an error in: retry pending, outcome unknown, failed.
_ERROR_STATUSES = ("pending", "unknown", "failed")

# The planner's latency model: the newest sends that recorded a latency (`:b_limit`).
LATENCY_SAMPLES = (
    select(M.latency_ms)
    .where(M.latency_ms.is_not(None), M.sent_at.is_not(None))
    .order_by(M.sent_at.desc())
    .limit(bindparam("b_limit"))
)


def _count(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


class OperatorSql(SqlCore):
    """Counts and samples for `dripline status`, the dashboard and `/metrics`."""

    def pool_usage(self) -> PoolUsage | None:
        """Connections checked out of the pool now (no query); None when the pool does
        not count them (SQLite in memory uses one static connection)."""
        from dripline.store.report_types import PoolUsage

        pool = self._engine.pool
        if not isinstance(pool, QueuePool):
            return None
        return PoolUsage(in_use=pool.checkedout(), size=pool.size())

    async def backlog(self, now: datetime) -> BacklogCounts:
        from dripline.store.report_types import BacklogCounts

        unleased = or_(C.lease_expires_at.is_(None), C.lease_expires_at < ts("b_now"))
        due = and_(ACTIVE, unleased, C.next_send_at <= ts("b_now"))

        stmt = select(
            C.state,
            func.count(),
            _count(due),
            _count(and_(due, C.next_send_at <= ts("b_minute_ago"))),
            _count(and_(ACTIVE, C.next_send_at > ts("b_now"), C.next_send_at <= ts("b_hour"))),
            _count(C.lease_expires_at >= ts("b_now")),
        ).group_by(C.state)
        params = {
            "b_now": now,
            "b_minute_ago": now - timedelta(minutes=1),
            "b_hour": now + timedelta(hours=1),
        }
        async with self._read() as conn:
            rows = (await conn.execute(stmt, params)).all()
        by_state = dict.fromkeys(CONVERSATION_STATES, 0)
        for row in rows:
            by_state[row[0]] = int(row[1])
        return BacklogCounts(
            due_now=sum(int(r[2]) for r in rows),
            overdue_1m=sum(int(r[3]) for r in rows),
            due_next_hour=sum(int(r[4]) for r in rows),
            leased=sum(int(r[5]) for r in rows),
            by_state=by_state,
        )

    async def backlog_snapshot(self, now: datetime) -> BacklogSnapshot:
        """Via the partial due index: cheaper than `backlog`, which also counts every
        state over the whole table."""
        from dripline.store.report_types import BacklogSnapshot

        unleased = or_(C.lease_expires_at.is_(None), C.lease_expires_at < now)
        stmt = select(
            _count(and_(unleased, C.next_send_at <= now)),
            _count(and_(unleased, C.next_send_at <= now - timedelta(minutes=1))),
            _count(C.next_send_at > now),
            _count(C.lease_expires_at >= now),
        ).where(ACTIVE, C.next_send_at <= now + timedelta(hours=1))
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one()
        return BacklogSnapshot(
            due_now=int(row[0]),
            overdue_1m=int(row[1]),
            due_next_hour=int(row[2]),
            leased=int(row[3]),
        )

    async def conversations_by_state(self) -> dict[str, int]:
        stmt = select(C.state, func.count()).group_by(C.state)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        counts = dict.fromkeys(CONVERSATION_STATES, 0)
        for state, n in rows:
            counts[state] = int(n)
        return counts

    async def conversations_by_state_estimate(self, min_rows: int) -> dict[str, int] | None:
        if self._engine.dialect.name != "postgresql":
            return None
        # The planner's statistics from the last ANALYZE (autovacuum's, in production):
        # the table's row estimate times each state's share among the values sampled.
        stmt = text(
            "SELECT c.reltuples, s.most_common_vals::text::text[], s.most_common_freqs "
            "FROM pg_class AS c LEFT JOIN pg_stats AS s ON s.schemaname = current_schema() "
            "AND s.tablename = 'conversations' AND s.attname = 'state' "
            "WHERE c.oid = 'conversations'::regclass"
        )
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one()
        return state_estimates(row[0], row[1], row[2], min_rows)

    async def sent_counts(
        self, now: datetime, windows_s: Sequence[int] = THROUGHPUT_WINDOWS_S
    ) -> dict[int, int]:
        """Messages sent in each trailing window ending at `now` (one index range scan)."""
        longest = max(windows_s)
        columns = [_count(M.sent_at > now - timedelta(seconds=w)) for w in windows_s]
        stmt = select(*columns).where(
            M.sent_at > now - timedelta(seconds=longest), M.sent_at <= now
        )
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one()
        return {w: int(v) for w, v in zip(windows_s, row, strict=True)}

    async def lag_summary(
        self, now: datetime, *, window_s: float = 300.0, sample: int = 10_000
    ) -> LagSummary:
        stmt = (
            select(M.sent_at, M.due_at, M.latency_ms)
            .where(M.sent_at > now - timedelta(seconds=window_s), M.sent_at <= now)
            .order_by(M.sent_at.desc())
            .limit(sample)
        )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return summarize_sends((sent, due, lat) for sent, due, lat in rows)

    async def error_counts(
        self, now: datetime, *, window_s: float = 900.0, error_scan: int = 200_000
    ) -> list[ErrorCount]:
        """Messages in an error state (failed, retry pending, outcome unknown) updated within
        `window_s`, by code and status, most frequent first.

        Bounded twice: by status (`ix_messages_status`; a healthy table is mostly sent) and
        by id (only the newest `error_scan` messages), so a bad day cannot make it slow.
        """
        from dripline.store.report_types import ErrorCount

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
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        found = [ErrorCount(code=code, status=status, count=int(n)) for code, status, n in rows]
        found.sort(key=lambda e: (-e.count, e.code if e.code is not None else -1, e.status))
        return found

    async def live_workers(self, now: datetime, *, live_after_s: float = 10.0) -> list[WorkerInfo]:
        stmt = (
            select(workers)
            .where(W.heartbeat_at >= now - timedelta(seconds=live_after_s))
            .order_by(W.id)
        )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [worker_from_row(r) for r in rows]

    async def latency_samples_ms(self, *, limit: int = 20_000) -> list[float]:
        async with self._read() as conn:
            rows = (await conn.execute(LATENCY_SAMPLES, {"b_limit": limit})).scalars().all()
        return [float(v) for v in rows]

    async def snapshot(self) -> StoreSnapshot:
        from dripline.store.report_types import StoreSnapshot

        async with self._read() as conn:
            convs = await conn.execute(select(*CONVERSATION_COLUMNS).order_by(C.id))
            msgs = await conn.execute(select(*MESSAGE_COLUMNS).order_by(M.id))
            inbound = await conn.execute(select(*INBOUND_COLUMNS).order_by(INBOUND_COLUMNS[0]))
            rows = await conn.execute(select(*inbox.c).order_by(inbox.c.id))
            live = await conn.execute(select(workers).order_by(W.id))
            opted = await conn.execute(
                select(*suppressions.c).order_by(suppressions.c.sender, suppressions.c.phone)
            )
            return StoreSnapshot(
                conversations=tuple(conversation_from_row(r) for r in convs),
                messages=tuple(message_from_row(r) for r in msgs),
                inbound=tuple(inbound_from_row(r) for r in inbound),
                inbox=tuple(InboxEntry(*r) for r in rows),
                workers=tuple(worker_from_row(r) for r in live),
                suppressions=tuple(Suppression(*r) for r in opted),
            )
