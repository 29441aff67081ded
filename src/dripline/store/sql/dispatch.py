"""Dispatch queries: claim, reserve, record, leases, wake-up timing, worker heartbeats.

The hot path: claim_due, reserve and record_results were tuned by measurement (see
bench/README.md); each is one transaction of a few set-based statements, built once per
store. The dialect modules override `_due_ids` (PostgreSQL all of `_build_claim`),
`_build_lock_owned`, `_build_prior_messages`, `_read_prior`, `_record` and
`_upsert_worker`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Select,
    Update,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dripline.store.schema import conversations, messages, workers
from dripline.store.sql.core import (
    ACTIVE,
    CHUNK,
    CONVERSATION_COLUMNS,
    INSERT_PAGE,
    SqlCore,
    chunks,
    conversation_from_row,
    ts,
    worker_from_row,
)
from dripline.store.sql.reserve_plan import key, plan, wanted
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
    "DispatchSql",
    "claim_params",
    "claimed_rows",
    "extend_update",
    "heartbeat_values",
    "lock_owned_select",
]

C = conversations.c
M = messages.c
W = workers.c

# The conversation ids a statement acts on, `b_ids` (PostgreSQL's lane binds one array
# instead: `postgres_hot.py`).
_ID_IN = C.id.in_(bindparam("b_ids", expanding=True))


def lock_owned_select(ids: ColumnElement[bool]) -> Select[Any]:
    """Those of `ids` whose lease `b_w` holds live at `b_now`, by id (the dialects add
    their row lock). A live lease only: a lapsed one may have let the inbox processor
    apply a STOP."""
    return (
        select(C.id)
        .where(ids, C.lease_owner == bindparam("b_w"), C.lease_expires_at >= ts("b_now"))
        .order_by(C.id)
    )


def extend_update(ids: ColumnElement[bool]) -> Update:
    """`Store.extend_leases`: those of `ids` whose lease `b_w` holds live at `b_now` now
    run to `b_until`."""
    return (
        update(conversations)
        .where(ids, C.lease_owner == bindparam("b_w"), C.lease_expires_at >= ts("b_now"))
        .values(lease_expires_at=ts("b_until"))
        .returning(C.id)
    )


class DispatchSql(SqlCore):
    """The dispatcher's queries; the dialect subclasses set the dialect-specific parts."""

    def __init__(self, engine: AsyncEngine, target: str) -> None:
        super().__init__(engine, target)
        self._claim = self._build_claim()
        self._release = (
            update(conversations)
            .where(C.id.in_(bindparam("b_ids", expanding=True)), C.lease_owner == bindparam("b_w"))
            .values(lease_owner=None, lease_expires_at=None)
        )
        self._extend = extend_update(_ID_IN)
        self._next_due = select(func.min(C.next_send_at)).where(
            ACTIVE, or_(C.lease_expires_at.is_(None), C.lease_expires_at < ts("b_now"))
        )
        self._lock_owned = self._build_lock_owned()
        self._prior_messages = self._build_prior_messages()
        self._insert_messages = insert(messages).returning(
            M.id, M.conversation_id, M.step, M.purpose
        )
        self._update_reserved = (
            update(messages)
            .where(M.id == bindparam("b_id"))
            .values(
                status=bindparam("b_status"),
                attempts=bindparam("b_attempts"),
                status_at=ts("b_now"),
                updated_at=ts("b_now"),
                reserved_at=ts("b_reserved"),
            )
        )
        self._live_workers = select(workers).where(W.heartbeat_at >= ts("b_since"))
        self._unregister: Delete = delete(workers).where(W.id == bindparam("b_id"))

    # statements --------------------------------------------------------------
    def _build_claim(self) -> Update:
        return (
            update(conversations)
            .where(C.id.in_(self._due_ids()))
            .values(lease_owner=bindparam("b_w"), lease_expires_at=ts("b_until"))
            .returning(*CONVERSATION_COLUMNS)
        )

    def _due_select(self) -> Select[Any]:
        return (
            select(C.id)
            .where(
                ACTIVE,
                C.next_send_at <= ts("b_now"),
                or_(C.lease_expires_at.is_(None), C.lease_expires_at < ts("b_now")),
            )
            .order_by(C.next_send_at)
            .limit(bindparam("b_limit"))
        )

    def _due_ids(self) -> Any:
        """The ids to claim, earliest first (PostgreSQL builds its own claim:
        `postgres_hot.claim_update`)."""
        return self._due_select().scalar_subquery()

    def _build_lock_owned(self) -> Select[Any]:
        return lock_owned_select(_ID_IN)

    def _build_prior_messages(self) -> Select[Any]:
        return select(
            M.id,
            M.conversation_id,
            M.step,
            M.purpose,
            M.status,
            M.attempts,
            M.wamid,
            M.error_code,
            M.status_at,
            func.coalesce(M.reserved_at, M.created_at).label("reserved_at"),
        ).where(M.conversation_id.in_(bindparam("b_ids", expanding=True)))

    # dispatch ----------------------------------------------------------------
    async def claim_due(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> list[Conversation]:
        if limit <= 0:
            return []
        async with self._write() as conn:
            return await self._claim_rows(conn, limit, lease_ttl_s, worker_id, now)

    async def claim_next(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> Claim:
        async with self._write() as conn:
            claimed = await self._claim_rows(conn, limit, lease_ttl_s, worker_id, now)
            # Same transaction: the rows just leased are excluded, as they would be by a
            # separate `next_due_at` after the commit.
            next_due: datetime | None = (
                await conn.execute(self._next_due, {"b_now": now})
            ).scalar()
        return Claim(claimed, next_due)

    async def _claim_rows(
        self, conn: AsyncConnection, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> list[Conversation]:
        if limit <= 0:
            return []
        params = claim_params(limit, lease_ttl_s, worker_id, now)
        return claimed_rows((await conn.execute(self._claim, params)).all())

    async def reserve(
        self, items: Sequence[Reservation], worker_id: str, now: datetime
    ) -> list[ReservationResult]:
        """See `Store.reserve`; also not ok with `prior_status='lease_lost'` for an item
        whose conversation this worker no longer leases (nothing is written for it)."""
        if not items:
            return []
        cids = sorted({item.conversation_id for item in items})
        async with self._write() as conn:
            owned: set[int] = set()
            for chunk in chunks(cids):
                rows = await conn.execute(
                    self._lock_owned, {"b_ids": list(chunk), "b_w": worker_id, "b_now": now}
                )
                owned.update(r[0] for r in rows)
            prior = await self._read_prior(conn, wanted(items, owned))
            todo = plan(items, owned, prior, now)
            results = todo.results
            for page in chunks(todo.inserts, INSERT_PAGE):
                rows = await conn.execute(self._insert_messages, list(page))
                for r in rows:
                    results[(r.conversation_id, r.step, r.purpose)] = ReservationResult(
                        r.conversation_id, r.id, True, None, 1, reserved_at=now
                    )
            if todo.updates:
                await conn.execute(self._update_reserved, todo.updates)
        return [results[key(i)] for i in items]

    async def _read_prior(
        self, conn: AsyncConnection, wanted: set[tuple[int, int, str]]
    ) -> dict[tuple[int, int, str], Any]:
        """The message rows of these (conversation, step, purpose) keys that exist."""
        prior: dict[tuple[int, int, str], Any] = {}
        # By conversation id, the keys filtered here: SQLite cannot search an index
        # for a row-value IN list and scanned every message row instead, so each
        # reservation cost more as the table grew (issue 14: a drain's rate fell by
        # two thirds). A conversation has a few message rows, one per step sent.
        for id_chunk in chunks(sorted({k[0] for k in wanted}), CHUNK):
            rows = await conn.execute(self._prior_messages, {"b_ids": list(id_chunk)})
            for r in rows:
                key = (r.conversation_id, r.step, r.purpose)
                if key in wanted:
                    prior[key] = r
        return prior

    async def record_results(
        self, outcomes: Sequence[Outcome], worker_id: str, now: datetime
    ) -> int:
        """See `Store.record_results`. A message write replaces the status only while it
        is `pending`/`sending`/`unknown` (a webhook's `delivered` is never downgraded);
        `wamid`, `sent_at` and `latency_ms` fill in when given."""
        if not outcomes:
            return 0
        async with self._write() as conn:
            return await self._record(conn, outcomes, worker_id, now)

    async def _record(
        self, conn: AsyncConnection, outcomes: Sequence[Outcome], worker_id: str, now: datetime
    ) -> int:
        msg_rows = [
            {
                "b_id": o.message.message_id,
                "b_status": o.message.status,
                "b_wamid": o.message.wamid,
                "b_code": o.message.error_code,
                "b_title": o.message.error_title,
                "b_sent": o.message.sent_at,
                "b_latency": o.message.latency_ms,
                "b_now": now,
            }
            for o in outcomes
            if o.message is not None
        ]
        if msg_rows:
            await conn.execute(_UPDATE_MESSAGE, msg_rows)
        conv_rows = [
            {
                "b_id": o.conversation.conversation_id,
                "b_w": worker_id,
                "b_state": o.conversation.state,
                "b_step": o.conversation.step,
                "b_purpose": o.conversation.purpose,
                "b_next": o.conversation.next_send_at,
                "b_attempts": o.conversation.attempts,
                "b_error": o.conversation.last_error,
                "b_wa": o.conversation.wa_id,
                "b_now": now,
            }
            for o in outcomes
        ]
        result = await conn.execute(_UPDATE_CONVERSATION, conv_rows)
        return max(result.rowcount, 0)

    async def release(self, conversation_ids: Sequence[int], worker_id: str) -> int:
        if not conversation_ids:
            return 0
        count = 0
        async with self._write() as conn:
            for chunk in chunks(list(conversation_ids)):
                result = await conn.execute(self._release, {"b_ids": list(chunk), "b_w": worker_id})
                count += result.rowcount
        return count

    async def extend_leases(
        self, conversation_ids: Sequence[int], worker_id: str, lease_ttl_s: float, now: datetime
    ) -> list[int]:
        """See `Store.extend_leases`: applies where `worker_id` holds a live lease."""
        if not conversation_ids:
            return []
        params = {"b_w": worker_id, "b_now": now, "b_until": now + timedelta(seconds=lease_ttl_s)}
        extended: list[int] = []
        async with self._write() as conn:
            for chunk in chunks(sorted(conversation_ids)):
                rows = await conn.execute(self._extend, {**params, "b_ids": list(chunk)})
                extended.extend(r[0] for r in rows)
        return sorted(extended)

    async def next_due_at(self, now: datetime) -> datetime | None:
        async with self._read() as conn:
            value: datetime | None = (await conn.execute(self._next_due, {"b_now": now})).scalar()
        return value

    async def heartbeat(self, worker: WorkerInfo, live_after_s: float) -> list[WorkerInfo]:
        since = worker.heartbeat_at - timedelta(seconds=live_after_s)
        async with self._write() as conn:
            await conn.execute(self._upsert(workers), heartbeat_values(worker))
            rows = (await conn.execute(self._live_workers, {"b_since": since})).all()
        return sorted((worker_from_row(r) for r in rows), key=lambda w: w.id)

    async def unregister(self, worker_id: str) -> None:
        async with self._write() as conn:
            await conn.execute(self._unregister, {"b_id": worker_id})


def heartbeat_values(worker: WorkerInfo) -> dict[str, Any]:
    """The `workers` row of a heartbeat, by column."""
    return {
        "id": worker.id,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "started_at": worker.started_at,
        "heartbeat_at": worker.heartbeat_at,
        "rate_per_s": worker.rate_per_s,
        "concurrency": worker.concurrency,
        "policy": worker.policy,
        "stats": dict(worker.stats) if worker.stats else None,
    }


def claim_params(limit: int, lease_ttl_s: float, worker_id: str, now: datetime) -> dict[str, Any]:
    """The claim statement's parameters."""
    return {
        "b_now": now,
        "b_limit": limit,
        "b_w": worker_id,
        "b_until": now + timedelta(seconds=lease_ttl_s),
    }


def claimed_rows(rows: Sequence[Any]) -> list[Conversation]:
    """The claim's RETURNING rows, earliest due first."""
    claimed = [conversation_from_row(r) for r in rows]
    claimed.sort(key=lambda c: (c.next_send_at, c.id))
    return claimed


# A dispatcher's message write: the status only while it is still its own to set.
# Literal SQL, not `in_()`: an IN list becomes an "expanding" parameter, which
# executemany (one statement for the whole batch) cannot take.
_NONFINAL = M.status.in_([literal_column(f"'{s}'") for s in NONFINAL_STATUSES])

_UPDATE_MESSAGE = (
    update(messages)
    .where(M.id == bindparam("b_id"))
    .values(
        status=case((_NONFINAL, bindparam("b_status")), else_=M.status),
        error_code=case((_NONFINAL, bindparam("b_code")), else_=M.error_code),
        error_title=case((_NONFINAL, bindparam("b_title")), else_=M.error_title),
        wamid=func.coalesce(bindparam("b_wamid"), M.wamid),
        sent_at=func.coalesce(ts("b_sent"), M.sent_at),
        latency_ms=func.coalesce(bindparam("b_latency"), M.latency_ms),
        status_at=case((_NONFINAL, ts("b_now")), else_=M.status_at),
        updated_at=ts("b_now"),
    )
)

# The lease guard: only the worker still holding a live lease writes, and the write
# releases it.
_UPDATE_CONVERSATION = (
    update(conversations)
    .where(
        C.id == bindparam("b_id"),
        C.lease_owner == bindparam("b_w"),
        C.lease_expires_at >= ts("b_now"),
    )
    .values(
        state=bindparam("b_state"),
        step=bindparam("b_step"),
        purpose=bindparam("b_purpose"),
        next_send_at=ts("b_next"),
        attempts=bindparam("b_attempts"),
        last_error=bindparam("b_error"),
        wa_id=func.coalesce(bindparam("b_wa"), C.wa_id),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=ts("b_now"),
    )
)
