"""The store on SQLAlchemy Core, shared by the SQLite and PostgreSQL backends.

Every method is one transaction of a few set-based statements, never a query per row:
bulk inserts go through SQLAlchemy's multi-row `insertmanyvalues`, bulk updates through
`executemany` (SQLite) or one `UPDATE ... FROM unnest(...)` (PostgreSQL, see
`postgres.py`). Statements are built once per store so SQLAlchemy's compiled cache hits.
Driver errors become `DatabaseUnavailable` or `StoreError` at this boundary.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Select,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dripline.errors import DatabaseUnavailable, StoreError, TransientStoreError
from dripline.store.base import (
    BacklogCounts,
    ClaimedConversation,
    Enrollment,
    EnrollResult,
    Outcome,
    Reservation,
    ReservationResult,
    Store,
    WorkerInfo,
)
from dripline.store.schema import (
    ACTIVE_SQL,
    CONVERSATION_STATES,
    UTCDateTime,
    conversations,
    inbox,
    messages,
    workers,
)

__all__ = ["LEASE_LOST", "NONFINAL_STATUSES", "SqlStore"]

T = TypeVar("T")

C = conversations.c
M = messages.c
W = workers.c

# `reserve` answers this `prior_status` when the caller does not hold the lease.
LEASE_LOST = "lease_lost"
# Message statuses a dispatcher's own write may replace; later ones came from a webhook
# (or an earlier worker) and are never downgraded by `record_results`.
NONFINAL_STATUSES = ("pending", "sending", "unknown")
# PostgreSQL: deadlock_detected, serialization_failure.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
# admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# asyncpg's errors for a connection whose protocol state was broken mid-operation.
_BROKEN_CONNECTION_ERRORS = frozenset(
    {"InternalClientError", "ConnectionDoesNotExistError", "InterfaceError"}
)

_ACTIVE = text(ACTIVE_SQL)
# Keys per `IN (...)` list: well under SQLite's and asyncpg's 32,766-parameter limits.
_CHUNK = 5_000
# Rows per multi-row INSERT: 2,000 x 13 columns stays under those limits too.
_INSERT_PAGE = 2_000
_ENROLL_RETRIES = 5


def _ts(name: str) -> Any:
    return bindparam(name, type_=UTCDateTime)


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, short enough for a one-line error."""
    orig = getattr(exc, "orig", None) or exc
    text_ = str(orig).strip().splitlines()
    message = text_[0] if text_ else type(orig).__name__
    return message[:200]


class SqlStore(Store):
    """Shared implementation; subclasses set the dialect-specific parts."""

    def __init__(self, engine: AsyncEngine, target: str) -> None:
        self._engine = engine
        # Where the database is, for messages: a file path or host:port/db, no password.
        self.target = target
        self._claim = self._build_claim()
        self._last_webhook = select(inbox.c.received_at).order_by(inbox.c.id.desc()).limit(1)
        self._release = (
            update(conversations)
            .where(C.id.in_(bindparam("b_ids", expanding=True)), C.lease_owner == bindparam("b_w"))
            .values(lease_owner=None, lease_expires_at=None)
        )
        self._extend = (
            update(conversations)
            .where(C.id.in_(bindparam("b_ids", expanding=True)), C.lease_owner == bindparam("b_w"))
            .values(lease_expires_at=_ts("b_until"))
        )
        self._next_due = select(func.min(C.next_send_at)).where(
            _ACTIVE, or_(C.lease_expires_at.is_(None), C.lease_expires_at < _ts("b_now"))
        )
        self._existing_active = select(C.id, C.phone, C.flow).where(
            _ACTIVE, C.phone.in_(bindparam("b_phones", expanding=True))
        )
        self._insert_conversations = insert(conversations).returning(C.id, C.phone, C.flow)
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
                status_at=_ts("b_now"),
                updated_at=_ts("b_now"),
            )
        )
        self._live_workers = select(workers).where(W.heartbeat_at >= _ts("b_since"))
        self._unregister: Delete = delete(workers).where(W.id == bindparam("b_id"))

    # statements --------------------------------------------------------------
    def _build_claim(self) -> Update:
        return (
            update(conversations)
            .where(C.id.in_(self._due_ids()))
            .values(lease_owner=bindparam("b_w"), lease_expires_at=_ts("b_until"))
            .returning(
                C.id,
                C.phone,
                C.flow,
                C.step,
                C.purpose,
                C.state,
                C.attempts,
                C.next_send_at,
                C.lease_expires_at,
                C.last_inbound_at,
                C.name,
                C.timezone,
                C.sender,
                C.fields,
            )
        )

    def _due_select(self) -> Select[Any]:
        return (
            select(C.id)
            .where(
                _ACTIVE,
                C.next_send_at <= _ts("b_now"),
                or_(C.lease_expires_at.is_(None), C.lease_expires_at < _ts("b_now")),
            )
            .order_by(C.next_send_at)
            .limit(bindparam("b_limit"))
        )

    def _due_ids(self) -> Any:
        """The ids to claim, earliest first (PostgreSQL adds SKIP LOCKED)."""
        return self._due_select().scalar_subquery()

    def _build_lock_owned(self) -> Select[Any]:
        return (
            select(C.id)
            .where(C.id.in_(bindparam("b_ids", expanding=True)), C.lease_owner == bindparam("b_w"))
            .order_by(C.id)
        )

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
        ).where(
            tuple_(M.conversation_id, M.step, M.purpose).in_(bindparam("b_keys", expanding=True))
        )

    def _upsert_worker(self) -> Insert:
        raise NotImplementedError

    # transactions ------------------------------------------------------------
    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Translate driver errors into dripline's, naming the database, never a secret."""
        try:
            yield
        except (DatabaseUnavailable, StoreError):
            raise
        except (sa_exc.OperationalError, sa_exc.InterfaceError, OSError, TimeoutError) as exc:
            raise DatabaseUnavailable(
                f"database {self.target} is unavailable: {first_line(exc)}"
            ) from exc
        except sa_exc.DBAPIError as exc:
            state = str(getattr(exc.orig, "sqlstate", "") or "")
            # A server shutting down, starting up or refusing connections, or a
            # connection left broken mid-operation by one: wait it out.
            if (
                state.startswith("08")
                or state in _UNAVAILABLE_SQLSTATES
                or exc.connection_invalidated
                or type(exc.orig).__name__ in _BROKEN_CONNECTION_ERRORS
            ):
                raise DatabaseUnavailable(
                    f"database {self.target} is unavailable: {first_line(exc)}"
                ) from exc
            # Deadlocks and serialization failures are the database asking for a retry.
            if state in _RETRYABLE_SQLSTATES:
                raise TransientStoreError(f"database {self.target}: {first_line(exc)}") from exc
            raise StoreError(f"database {self.target}: {first_line(exc)}") from exc
        except sa_exc.SQLAlchemyError as exc:
            raise StoreError(f"database {self.target}: {first_line(exc)}") from exc

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE)."""
        async with self._errors(), self._engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """One read-only transaction (SQLite: a deferred BEGIN, no write lock)."""
        async with self._errors(), self._engine.connect() as conn:
            conn = await conn.execution_options(dripline_read=True)
            async with conn.begin():
                yield conn

    async def close(self) -> None:
        await self._engine.dispose()

    async def _after_enroll(self, conn: AsyncConnection, earliest: datetime) -> None:
        """Hook inside enroll's transaction (PostgreSQL: NOTIFY)."""

    def _after_enroll_commit(self) -> None:
        """Hook after enroll's commit (SQLite: set in-process wake-up events)."""

    # enrollment --------------------------------------------------------------
    async def enroll(self, items: Sequence[Enrollment], now: datetime) -> list[EnrollResult]:
        if not items:
            return []
        # Duplicates in the input share the first one's row.
        first: dict[tuple[str, str], Enrollment] = {}
        for item in items:
            first.setdefault((item.phone, item.flow), item)
        for attempt in range(_ENROLL_RETRIES):
            try:
                ids, created, earliest = await self._enroll_once(first, now)
                break
            except StoreError as exc:
                # A concurrent enroll of the same (phone, flow) won the race: the retry
                # finds its row. SQLite never gets here (BEGIN IMMEDIATE serializes).
                cause = exc.__cause__
                if not (
                    isinstance(cause, sa_exc.IntegrityError)
                    and "uq_conversations_active_phone_flow" in str(cause)
                    and attempt + 1 < _ENROLL_RETRIES
                ):
                    raise
        if earliest is not None:
            self._after_enroll_commit()
        seen: set[tuple[str, str]] = set()
        results = []
        for item in items:
            key = (item.phone, item.flow)
            results.append(EnrollResult(ids[key], key in created and key not in seen))
            seen.add(key)
        return results

    async def _enroll_once(
        self, first: Mapping[tuple[str, str], Enrollment], now: datetime
    ) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]], datetime | None]:
        ids: dict[tuple[str, str], int] = {}
        created: set[tuple[str, str]] = set()
        earliest: datetime | None = None
        async with self._write() as conn:
            phones = sorted({phone for phone, _ in first})
            for chunk in _chunks(phones):
                rows = await conn.execute(self._existing_active, {"b_phones": list(chunk)})
                for id_, phone, flow in rows:
                    if (phone, flow) in first:
                        ids[(phone, flow)] = id_
            new = []
            for key, item in first.items():
                if key in ids:
                    continue
                at = item.at or now
                if earliest is None or at < earliest:
                    earliest = at
                new.append(
                    {
                        "phone": item.phone,
                        "flow": item.flow,
                        "step": 0,
                        "purpose": "question",
                        "state": "pending",
                        "next_send_at": at,
                        "attempts": 0,
                        "name": item.name,
                        "timezone": item.timezone,
                        "sender": item.sender,
                        "fields": dict(item.fields) if item.fields else None,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            for page in _chunks(new, _INSERT_PAGE):
                rows = await conn.execute(self._insert_conversations, list(page))
                for id_, phone, flow in rows:
                    ids[(phone, flow)] = id_
                    created.add((phone, flow))
            if earliest is not None:
                await self._after_enroll(conn, earliest)
        return ids, created, earliest

    # dispatch ----------------------------------------------------------------
    async def claim_due(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> list[ClaimedConversation]:
        if limit <= 0:
            return []
        params = {
            "b_now": now,
            "b_limit": limit,
            "b_w": worker_id,
            "b_until": now + timedelta(seconds=lease_ttl_s),
        }
        async with self._write() as conn:
            rows = (await conn.execute(self._claim, params)).all()
        claimed = [
            ClaimedConversation(
                id=r[0],
                phone=r[1],
                flow=r[2],
                step=r[3],
                purpose=r[4],
                state=r[5],
                attempts=r[6],
                next_send_at=r[7],
                lease_expires_at=r[8],
                last_inbound_at=r[9],
                name=r[10],
                timezone=r[11],
                sender=r[12],
                fields=r[13] or {},
            )
            for r in rows
        ]
        claimed.sort(key=lambda c: (c.next_send_at, c.id))
        return claimed

    async def reserve(
        self, items: Sequence[Reservation], worker_id: str, now: datetime
    ) -> list[ReservationResult]:
        """See `Store.reserve`; also not ok with `prior_status='lease_lost'` for an item
        whose conversation this worker no longer leases (nothing is written for it)."""
        if not items:
            return []
        cids = sorted({item.conversation_id for item in items})
        keys = sorted({(i.conversation_id, i.step, i.purpose) for i in items})
        async with self._write() as conn:
            owned: set[int] = set()
            for chunk in _chunks(cids):
                rows = await conn.execute(
                    self._lock_owned, {"b_ids": list(chunk), "b_w": worker_id}
                )
                owned.update(r[0] for r in rows)
            prior: dict[tuple[int, int, str], Any] = {}
            owned_keys = [k for k in keys if k[0] in owned]
            for key_chunk in _chunks(owned_keys, _CHUNK // 3):
                rows = await conn.execute(self._prior_messages, {"b_keys": list(key_chunk)})
                for r in rows:
                    prior[(r.conversation_id, r.step, r.purpose)] = r
            results: dict[tuple[int, int, str], ReservationResult] = {}
            inserts: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            for item in items:
                key = (item.conversation_id, item.step, item.purpose)
                if key in results:
                    continue  # a duplicate in the batch: same answer as the first
                if item.conversation_id not in owned:
                    row = prior.get(key)
                    results[key] = ReservationResult(
                        item.conversation_id, row.id if row else 0, False, LEASE_LOST, 0
                    )
                    continue
                row = prior.get(key)
                if row is None:
                    inserts.append(
                        {
                            "conversation_id": item.conversation_id,
                            "step": item.step,
                            "purpose": item.purpose,
                            "sender": item.sender,
                            "status": "sending",
                            "attempts": 1,
                            "due_at": item.due_at,
                            "status_at": now,
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                    continue
                status = row.status
                takeover = status == "pending" or (
                    status in ("sending", "unknown") and item.resend_unknown
                )
                if takeover:
                    attempts = row.attempts + 1
                    updates.append(
                        {
                            "b_id": row.id,
                            "b_status": "sending",
                            "b_attempts": attempts,
                            "b_now": now,
                        }
                    )
                    results[key] = ReservationResult(
                        item.conversation_id, row.id, True, status, attempts
                    )
                    continue
                if status == "sending":
                    # Its worker crashed mid-send: the message may or may not have left.
                    updates.append(
                        {
                            "b_id": row.id,
                            "b_status": "unknown",
                            "b_attempts": row.attempts,
                            "b_now": now,
                        }
                    )
                results[key] = ReservationResult(
                    item.conversation_id,
                    row.id,
                    False,
                    status,
                    row.attempts,
                    wamid=row.wamid,
                    error_code=row.error_code,
                    status_at=row.status_at,
                )
            for page in _chunks(inserts, _INSERT_PAGE):
                rows = await conn.execute(self._insert_messages, list(page))
                for r in rows:
                    results[(r.conversation_id, r.step, r.purpose)] = ReservationResult(
                        r.conversation_id, r.id, True, None, 1
                    )
            if updates:
                await conn.execute(self._update_reserved, updates)
        return [results[(i.conversation_id, i.step, i.purpose)] for i in items]

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
                "b_now": now,
            }
            for o in outcomes
        ]
        result = await conn.execute(_UPDATE_CONVERSATION, conv_rows)
        return max(result.rowcount, 0)

    async def last_webhook_at(self) -> datetime | None:
        """See `Store.last_webhook_at`: the newest inbox row, found by primary key."""
        async with self._read() as conn:
            value = await conn.scalar(self._last_webhook)
        return value if isinstance(value, datetime) else None

    async def release(self, conversation_ids: Sequence[int], worker_id: str) -> int:
        if not conversation_ids:
            return 0
        count = 0
        async with self._write() as conn:
            for chunk in _chunks(list(conversation_ids)):
                result = await conn.execute(self._release, {"b_ids": list(chunk), "b_w": worker_id})
                count += result.rowcount
        return count

    async def extend_leases(
        self, conversation_ids: Sequence[int], worker_id: str, lease_ttl_s: float, now: datetime
    ) -> int:
        """See `Store.extend_leases`: applies where `worker_id` is still the owner."""
        if not conversation_ids:
            return 0
        until = now + timedelta(seconds=lease_ttl_s)
        count = 0
        async with self._write() as conn:
            for chunk in _chunks(list(conversation_ids)):
                result = await conn.execute(
                    self._extend, {"b_ids": list(chunk), "b_w": worker_id, "b_until": until}
                )
                count += result.rowcount
        return count

    async def next_due_at(self, now: datetime) -> datetime | None:
        async with self._read() as conn:
            value: datetime | None = (await conn.execute(self._next_due, {"b_now": now})).scalar()
        return value

    def wakeup_event(self) -> asyncio.Event:
        raise NotImplementedError

    async def wakeup_ready(self) -> None:
        """Wait until `wakeup_event()` is really listening (PostgreSQL: LISTEN issued).

        Optional for callers: a notification sent before that is simply missed, and the
        dispatcher's poll ceiling covers it. Tests use it to avoid that race."""

    # operator's view ---------------------------------------------------------
    async def backlog(self, now: datetime) -> BacklogCounts:
        """See `Store.backlog`. due_now / overdue_1m: active, unleased, next_send_at <= now
        (minus a minute); due_next_hour: now < next_send_at <= now + 1h; leased: a live
        lease (expires after now)."""
        unleased = or_(C.lease_expires_at.is_(None), C.lease_expires_at < _ts("b_now"))
        due = and_(_ACTIVE, unleased, C.next_send_at <= _ts("b_now"))

        def count(cond: ColumnElement[bool]) -> Any:
            return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

        stmt = select(
            C.state,
            func.count(),
            count(due),
            count(and_(due, C.next_send_at <= _ts("b_minute_ago"))),
            count(and_(_ACTIVE, C.next_send_at > _ts("b_now"), C.next_send_at <= _ts("b_hour"))),
            count(C.lease_expires_at >= _ts("b_now")),
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

    async def heartbeat(self, worker: WorkerInfo, live_after_s: float) -> list[WorkerInfo]:
        values = {
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
        since = worker.heartbeat_at - timedelta(seconds=live_after_s)
        async with self._write() as conn:
            await conn.execute(self._upsert_worker(), values)
            rows = (await conn.execute(self._live_workers, {"b_since": since})).all()
        return sorted(
            (
                WorkerInfo(
                    id=r.id,
                    hostname=r.hostname,
                    pid=r.pid,
                    started_at=r.started_at,
                    heartbeat_at=r.heartbeat_at,
                    rate_per_s=r.rate_per_s,
                    concurrency=r.concurrency,
                    policy=r.policy,
                    stats=r.stats or {},
                )
                for r in rows
            ),
            key=lambda w: w.id,
        )

    async def unregister(self, worker_id: str) -> None:
        async with self._write() as conn:
            await conn.execute(self._unregister, {"b_id": worker_id})


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
        sent_at=func.coalesce(_ts("b_sent"), M.sent_at),
        latency_ms=func.coalesce(bindparam("b_latency"), M.latency_ms),
        status_at=case((_NONFINAL, _ts("b_now")), else_=M.status_at),
        updated_at=_ts("b_now"),
    )
)

# The lease guard: only the worker still holding the lease writes, and the write
# releases it.
_UPDATE_CONVERSATION = (
    update(conversations)
    .where(C.id == bindparam("b_id"), C.lease_owner == bindparam("b_w"))
    .values(
        state=bindparam("b_state"),
        step=bindparam("b_step"),
        purpose=bindparam("b_purpose"),
        next_send_at=_ts("b_next"),
        attempts=bindparam("b_attempts"),
        last_error=bindparam("b_error"),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=_ts("b_now"),
    )
)
