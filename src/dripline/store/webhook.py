"""Webhook queries: the durable inbox and the batched application of its events.

The server stores each signed webhook body in `inbox` before answering 200
(`insert_inbox`, many bodies per transaction), and a processor applies unprocessed
rows in batches through `webhook_transaction()`: one transaction per batch, a few
set-based statements per kind of event, never one transaction per event.

Idempotency is in the statements themselves, so a redelivered or replayed body changes
nothing: a status only moves a message forwards (`STATUS_RANK`, enforced in the WHERE
clause, not in Python, so a concurrent writer cannot be overtaken), and an inbound
message is inserted at most once (unique wamid) in the same transaction as the
conversation change it causes.

On PostgreSQL, rows another transaction holds (a dispatcher claiming, reserving or
recording) are skipped with `SKIP LOCKED` instead of waited for, and reported `busy`:
the processor leaves those events for a later pass. Waiting could deadlock against a
dispatcher that locks the same rows in another order; skipping never waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dripline.store.schema import (
    ACTIVE_STATES,
    UTCDateTime,
    conversations,
    inbound_messages,
    inbox,
    messages,
)
from dripline.store.sql import SqlStore

__all__ = [
    "STATUS_RANK",
    "ConversationChange",
    "ConversationRow",
    "InboxRow",
    "NewInbound",
    "PhoneConversations",
    "StatusResult",
    "StatusUpdate",
    "WebhookTx",
    "inbox_backlog",
    "insert_inbox",
    "webhook_transaction",
]

C = conversations.c
M = messages.c
I = inbound_messages.c  # noqa: E741 -- mirrors C and M
X = inbox.c

# How far along a message is. A status webhook only ever raises the rank: `read` then a
# late `delivered` stays `read`. `failed` outranks `sent` (Meta reports a send it
# accepted as undeliverable) but not `delivered`/`read`, which prove it arrived.
STATUS_RANK: Mapping[str, int] = {
    "pending": 0,
    "sending": 0,
    "unknown": 0,
    "sent": 1,
    "failed": 2,
    "delivered": 3,
    "read": 4,
}
_CHUNK = 5_000
_SENT = ("sent", "delivered", "read")


def _ts(name: str) -> Any:
    return bindparam(name, type_=UTCDateTime)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    body: str


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One status event: `message_id` is the `biz_opaque_callback_data` we sent, if any."""

    wamid: str
    status: str  # sent, delivered, read or failed
    at: datetime
    message_id: int | None = None
    error_code: int | None = None
    error_title: str | None = None


@dataclass(frozen=True, slots=True)
class StatusResult:
    applied: int  # rows moved forwards
    unchanged: int  # matched, but the row was already as far along (a repeat)
    unmatched: int  # no message row for the wamid or the callback id
    busy: frozenset[str]  # wamids whose row another transaction holds: retry later


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """A conversation as the webhook sees it (satisfies flows' `ConversationLike`)."""

    id: int
    phone: str
    flow: str
    step: int
    purpose: str
    state: str
    attempts: int
    name: str | None
    timezone: str | None
    fields: Mapping[str, Any] | None
    last_inbound_at: datetime | None
    next_send_at: datetime | None
    lease_expires_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PhoneConversations:
    """One sender's conversations: the active ones (locked for this transaction), whether
    any of them is busy (leased by a dispatcher or locked by another transaction), and
    the newest conversation of any state (for recording a message with no active one)."""

    active: tuple[ConversationRow, ...]
    busy: bool
    latest_id: int | None


@dataclass(frozen=True, slots=True)
class NewInbound:
    wamid: str
    conversation_id: int | None
    phone: str
    step: int | None
    kind: str
    body: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationChange:
    """New values for a conversation the webhook moves (never a leased one)."""

    id: int
    state: str
    step: int
    purpose: str
    next_send_at: datetime | None
    attempts: int
    last_error: str | None
    last_inbound_at: datetime | None


def _in_literal(column: Any, values: Sequence[str]) -> Any:
    # Literal constants, not an expanding IN: executemany cannot take one.
    return column.in_([literal_column(f"'{v}'") for v in values])


def _status_update_statement(target: str) -> Any:
    lower = [s for s, r in STATUS_RANK.items() if r < STATUS_RANK[target]]
    values: dict[str, Any] = {
        "status": target,
        "wamid": func.coalesce(M.wamid, bindparam("b_wamid")),
        "status_at": _ts("b_at"),
        "updated_at": _ts("b_now"),
    }
    if target == "failed":
        values["error_code"] = bindparam("b_code")
        values["error_title"] = bindparam("b_title")
    else:
        # A send the API accepted: when the dispatcher lost the response (unknown), this
        # is the only record of when it went out.
        values["sent_at"] = func.coalesce(M.sent_at, _ts("b_at"))
    return (
        update(messages)
        .where(M.id == bindparam("b_id"), _in_literal(M.status, lower))
        .values(**values)
    )


_STATUS_UPDATES = {target: _status_update_statement(target) for target in (*_SENT, "failed")}

_CONV_COLUMNS = (
    C.id,
    C.phone,
    C.flow,
    C.step,
    C.purpose,
    C.state,
    C.attempts,
    C.name,
    C.timezone,
    C.fields,
    C.last_inbound_at,
    C.next_send_at,
    C.lease_expires_at,
    C.updated_at,
)

_UPDATE_CONVERSATION = (
    update(conversations)
    .where(C.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        step=bindparam("b_step"),
        purpose=bindparam("b_purpose"),
        next_send_at=_ts("b_next"),
        attempts=bindparam("b_attempts"),
        last_error=bindparam("b_error"),
        last_inbound_at=_ts("b_inbound"),
        updated_at=_ts("b_now"),
    )
)

_FINISH_INBOX = (
    update(inbox)
    .where(X.id == bindparam("b_id"))
    .values(processed_at=_ts("b_done"), error=bindparam("b_error"))
)


class WebhookTx:
    """One processing transaction. Use through `webhook_transaction(store)`."""

    def __init__(self, store: SqlStore, conn: AsyncConnection) -> None:
        self._store = store
        self._conn = conn
        self._pg = store.backend == "postgresql"
        self.wake_at: datetime | None = None

    # inbox -----------------------------------------------------------------
    async def take_inbox(self, limit: int, after_id: int = 0) -> list[InboxRow]:
        """Up to `limit` unprocessed rows with id > `after_id`, oldest first (PostgreSQL:
        rows another processor holds are skipped)."""
        stmt = (
            select(X.id, X.body)
            .where(X.processed_at.is_(None), X.id > after_id)
            .order_by(X.id)
            .limit(limit)
        )
        if self._pg:
            stmt = stmt.with_for_update(skip_locked=True)
        rows = await self._conn.execute(stmt)
        return [InboxRow(r.id, r.body) for r in rows]

    async def finish_inbox(
        self,
        done: Sequence[tuple[int, str | None]],
        waiting: Sequence[tuple[int, str]],
        now: datetime,
    ) -> None:
        """Mark rows processed (with an error for malformed ones); note why `waiting`
        rows stay unprocessed (they are retried on a later pass)."""
        params = [{"b_id": i, "b_done": now, "b_error": e} for i, e in done]
        params += [{"b_id": i, "b_done": None, "b_error": note[:500]} for i, note in waiting]
        if params:
            await self._conn.execute(_FINISH_INBOX, params)

    # statuses --------------------------------------------------------------
    async def apply_statuses(self, updates: Sequence[StatusUpdate], now: datetime) -> StatusResult:
        """Move message rows forwards; never backwards, repeats change nothing.

        A status finds its row by wamid, else by the callback id (a send whose response
        was lost has no wamid yet); a callback id only matches a row without a wamid or
        with the same one, so a stray id cannot touch another message.
        """
        if not updates:
            return StatusResult(0, 0, 0, frozenset())
        wamids = sorted({u.wamid for u in updates})
        by_wamid: dict[str, tuple[int, str]] = {}
        for chunk in _chunks(wamids):
            rows = await self._conn.execute(
                select(M.id, M.wamid, M.status).where(M.wamid.in_(list(chunk)))
            )
            for r in rows:
                by_wamid[r.wamid] = (r.id, r.status)
        ids = sorted({u.message_id for u in updates if u.wamid not in by_wamid and u.message_id})
        by_id: dict[int, tuple[str | None, str]] = {}
        for chunk in _chunks(ids):
            rows = await self._conn.execute(
                select(M.id, M.wamid, M.status).where(M.id.in_(list(chunk)))
            )
            for r in rows:
                by_id[r.id] = (r.wamid, r.status)

        # The furthest status per row in this batch (a batch may hold sent+delivered+read).
        best: dict[int, StatusUpdate] = {}
        current: dict[int, str] = {}
        wamids_of: dict[int, set[str]] = {}
        unmatched = 0
        for u in updates:
            row_id: int | None = None
            if u.wamid in by_wamid:
                row_id, status = by_wamid[u.wamid]
            elif u.message_id in by_id:
                assert u.message_id is not None
                row_wamid, status = by_id[u.message_id]
                if row_wamid in (None, u.wamid):
                    row_id = u.message_id
            if row_id is None:
                unmatched += 1
                continue
            current[row_id] = status
            wamids_of.setdefault(row_id, set()).add(u.wamid)
            prev = best.get(row_id)
            if prev is None or STATUS_RANK[u.status] > STATUS_RANK[prev.status]:
                best[row_id] = u

        busy_ids: set[int] = set()
        targets = sorted(
            i for i, u in best.items() if STATUS_RANK[u.status] > STATUS_RANK[current[i]]
        )
        if self._pg and targets:
            locked: set[int] = set()
            for chunk in _chunks(targets):
                rows = await self._conn.execute(
                    select(M.id)
                    .where(M.id.in_(list(chunk)))
                    .order_by(M.id)
                    .with_for_update(skip_locked=True)
                )
                locked.update(r.id for r in rows)
            busy_ids = set(targets) - locked
        applied = 0
        for target, stmt in _STATUS_UPDATES.items():
            params = [
                {
                    "b_id": i,
                    "b_wamid": best[i].wamid,
                    "b_at": best[i].at,
                    "b_now": now,
                    "b_code": best[i].error_code,
                    "b_title": best[i].error_title,
                }
                for i in targets
                if best[i].status == target and i not in busy_ids
            ]
            if params:
                result = await self._conn.execute(stmt, params)
                applied += max(result.rowcount, 0)
        busy = frozenset(w for i in busy_ids for w in wamids_of[i])
        return StatusResult(applied, len(best) - applied - len(busy_ids), unmatched, busy)

    # inbound ---------------------------------------------------------------
    async def existing_inbound(self, wamids: Sequence[str]) -> set[str]:
        """The wamids already recorded (a redelivery): they change nothing again."""
        found: set[str] = set()
        for chunk in _chunks(sorted(set(wamids))):
            rows = await self._conn.execute(select(I.wamid).where(I.wamid.in_(list(chunk))))
            found.update(r.wamid for r in rows)
        return found

    async def conversations_for(
        self, phones: Sequence[str], now: datetime
    ) -> dict[str, PhoneConversations]:
        """Each phone's conversations; active ones are locked until commit (PostgreSQL)."""
        phones = sorted(set(phones))
        active: dict[str, list[ConversationRow]] = {p: [] for p in phones}
        latest: dict[str, int] = {}
        busy: set[str] = set()
        for chunk in _chunks(phones):
            rows = await self._conn.execute(
                select(*_CONV_COLUMNS)
                .where(C.phone.in_(list(chunk)), C.state.in_(ACTIVE_STATES))
                .order_by(C.id)
            )
            for r in rows:
                row = ConversationRow(
                    id=r.id,
                    phone=r.phone,
                    flow=r.flow,
                    step=r.step,
                    purpose=r.purpose,
                    state=r.state,
                    attempts=r.attempts,
                    name=r.name,
                    timezone=r.timezone,
                    fields=r.fields,
                    last_inbound_at=r.last_inbound_at,
                    next_send_at=r.next_send_at,
                    lease_expires_at=r.lease_expires_at,
                    updated_at=r.updated_at,
                )
                active[r.phone].append(row)
                if row.lease_expires_at is not None and row.lease_expires_at > now:
                    busy.add(r.phone)
            rows = await self._conn.execute(
                select(C.phone, func.max(C.id).label("id"))
                .where(C.phone.in_(list(chunk)))
                .group_by(C.phone)
            )
            latest.update((r.phone, r.id) for r in rows)
        if self._pg:
            ids = sorted(c.id for p in phones if p not in busy for c in active[p])
            locked: set[int] = set()
            for chunk in _chunks(ids):
                rows = await self._conn.execute(
                    select(C.id)
                    .where(C.id.in_(list(chunk)))
                    .order_by(C.id)
                    .with_for_update(skip_locked=True)
                )
                locked.update(r.id for r in rows)
            for p in phones:
                if any(c.id not in locked for c in active[p]):
                    busy.add(p)
        return {p: PhoneConversations(tuple(active[p]), p in busy, latest.get(p)) for p in phones}

    async def sent_steps(self, keys: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
        """The (conversation, step) pairs whose question (or its fallback) went out."""
        found: set[tuple[int, int]] = set()
        ids = sorted({cid for cid, _ in keys})
        wanted = set(keys)
        for chunk in _chunks(ids):
            rows = await self._conn.execute(
                select(M.conversation_id, M.step).where(
                    M.conversation_id.in_(list(chunk)),
                    M.purpose.in_(("question", "fallback")),
                    M.status.in_(_SENT),
                )
            )
            found.update(
                (r.conversation_id, r.step) for r in rows if (r.conversation_id, r.step) in wanted
            )
        return found

    async def insert_inbound(self, rows: Sequence[NewInbound]) -> set[str]:
        """Insert messages not seen before; returns the wamids actually inserted."""
        inserted: set[str] = set()
        maker = pg_insert if self._pg else sqlite_insert
        for page in _chunks(list(rows), 2_000):
            values = [
                {
                    "wamid": r.wamid,
                    "conversation_id": r.conversation_id,
                    "phone": r.phone,
                    "step": r.step,
                    "kind": r.kind,
                    "body": r.body,
                    "received_at": r.received_at,
                }
                for r in page
            ]
            stmt = (
                maker(inbound_messages)
                .values(values)
                .on_conflict_do_nothing(index_elements=[I.wamid])
                .returning(I.wamid)
            )
            result = await self._conn.execute(stmt)
            inserted.update(r.wamid for r in result)
        return inserted

    async def update_conversations(
        self, changes: Sequence[ConversationChange], now: datetime
    ) -> int:
        """Write conversation changes (rows this transaction locked, none leased)."""
        if not changes:
            return 0
        params = [
            {
                "b_id": c.id,
                "b_state": c.state,
                "b_step": c.step,
                "b_purpose": c.purpose,
                "b_next": c.next_send_at,
                "b_attempts": c.attempts,
                "b_error": c.last_error,
                "b_inbound": c.last_inbound_at,
                "b_now": now,
            }
            for c in sorted(changes, key=lambda c: c.id)
        ]
        result = await self._conn.execute(_UPDATE_CONVERSATION, params)
        due = [c.next_send_at for c in changes if c.next_send_at is not None]
        if due:
            earliest = min(due)
            self.wake_at = earliest if self.wake_at is None else min(self.wake_at, earliest)
        return max(result.rowcount, 0)


@asynccontextmanager
async def webhook_transaction(store: SqlStore) -> AsyncIterator[WebhookTx]:
    """One write transaction for a batch of webhook events; wakes sleeping dispatchers
    after commit when it scheduled a step (LISTEN/NOTIFY or the in-process event)."""
    async with store._write() as conn:
        tx = WebhookTx(store, conn)
        yield tx
        if tx.wake_at is not None:
            await store._after_enroll(conn, tx.wake_at)
    if tx.wake_at is not None:
        store._after_enroll_commit()


async def insert_inbox(store: SqlStore, bodies: Sequence[str], now: datetime) -> None:
    """Store raw webhook bodies, all in one transaction (durable when this returns)."""
    if not bodies:
        return
    async with store._write() as conn:
        for page in _chunks(list(bodies), 1_000):
            await conn.execute(insert(inbox), [{"received_at": now, "body": body} for body in page])


async def inbox_backlog(store: SqlStore) -> tuple[int, int]:
    """(unprocessed rows, rows processed with an error)."""
    async with store._read() as conn:
        waiting = (
            await conn.execute(
                select(func.count()).select_from(inbox).where(X.processed_at.is_(None))
            )
        ).scalar_one()
        errors = (
            await conn.execute(
                select(func.count())
                .select_from(inbox)
                .where(X.processed_at.is_not(None), X.error.is_not(None))
            )
        ).scalar_one()
    return int(waiting), int(errors)
