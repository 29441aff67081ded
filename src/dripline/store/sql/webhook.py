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

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dripline.phones import phone_variants
from dripline.store.base import WebhookTx
from dripline.store.identity import RowsByUser
from dripline.store.schema import (
    ACTIVE_STATES,
    conversations,
    inbound_messages,
    inbox,
    messages,
    suppressions,
)
from dripline.store.sql.core import (
    CONVERSATION_COLUMNS,
    SqlCore,
    chunks,
    conversation_from_row,
    lock_conversations,
    ts,
)
from dripline.store.sql.statuses import StatusTx
from dripline.store.sql.webhook_errors import insert_webhook_errors
from dripline.store.types import (
    Conversation,
    Suppression,
)

if TYPE_CHECKING:
    from dripline.store.report_types import InboxBacklog, NewWebhookError
    from dripline.store.webhook_types import (
        ConversationChange,
        InboxRow,
        NewInbound,
        PhoneConversations,
    )

__all__ = ["SqlWebhookTx", "WebhookSql"]

C = conversations.c
M = messages.c
I = inbound_messages.c  # noqa: E741 -- mirrors C and M
X = inbox.c
S = suppressions.c

_SENT = ("sent", "delivered", "read")

_UPDATE_CONVERSATION = (
    update(conversations)
    .where(C.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        step=bindparam("b_step"),
        purpose=bindparam("b_purpose"),
        next_send_at=ts("b_next"),
        attempts=bindparam("b_attempts"),
        last_error=bindparam("b_error"),
        last_inbound_at=ts("b_inbound"),
        # A change here is made while no dispatcher holds a live lease; clearing a
        # lapsed one means its late result write can never overwrite this change.
        lease_owner=None,
        lease_expires_at=None,
        updated_at=ts("b_now"),
    )
)

_FINISH_INBOX = (
    update(inbox)
    .where(X.id == bindparam("b_id"))
    .values(processed_at=ts("b_done"), error=bindparam("b_error"))
)


def _id(c: Conversation) -> int:
    return c.id


def _insert_for(pg: bool) -> Any:
    """The dialect's INSERT (with ON CONFLICT), imported when first used: a module-level
    import loaded both dialects on every start-up, a dispatcher's too (~30 ms on SQLite)."""
    if pg:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


class SqlWebhookTx(StatusTx, WebhookTx):
    """One processing transaction on an open connection (see `WebhookSql`)."""

    def __init__(self, conn: AsyncConnection, postgres: bool) -> None:
        self._conn = conn
        self._pg = postgres
        self.wake_at: datetime | None = None

    # inbox -----------------------------------------------------------------
    async def take_inbox(self, limit: int, after_id: int = 0) -> list[InboxRow]:
        from dripline.store.webhook_types import InboxRow

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
        params = [{"b_id": i, "b_done": now, "b_error": e} for i, e in done]
        params += [{"b_id": i, "b_done": None, "b_error": note[:500]} for i, note in waiting]
        if params:
            await self._conn.execute(_FINISH_INBOX, params)

    # inbound ---------------------------------------------------------------
    async def existing_inbound(self, wamids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(sorted(set(wamids))):
            rows = await self._conn.execute(select(I.wamid).where(I.wamid.in_(list(chunk))))
            found.update(r.wamid for r in rows)
        return found

    async def conversations_for(
        self, phones: Sequence[str], now: datetime
    ) -> dict[str, PhoneConversations]:
        """Each sender's conversations (`is_same_user`); active ones are locked until
        commit (PostgreSQL)."""
        from dripline.store.webhook_types import PhoneConversations

        phones = sorted(set(phones))
        found: dict[int, Conversation] = {}
        heads: set[tuple[str, str | None, int]] = set()
        for chunk in chunks(phones, 1_000):
            # By number (and its variants) or by WhatsApp ID: one statement, two indexes.
            theirs = or_(
                C.phone.in_(sorted({v for p in chunk for v in phone_variants(p)})),
                C.wa_id.in_(sorted({p.lstrip("+") for p in chunk})),
            )
            rows = await self._conn.execute(
                select(*CONVERSATION_COLUMNS).where(theirs, C.state.in_(ACTIVE_STATES))
            )
            found.update((r.id, conversation_from_row(r)) for r in rows)
            rows = await self._conn.execute(
                select(C.phone, C.wa_id, func.max(C.id).label("id"))
                .where(theirs)
                .group_by(C.phone, C.wa_id)
            )
            heads.update((r.phone, r.wa_id, r.id) for r in rows)
        active: dict[str, list[Conversation]] = {}
        busy: set[str] = set()
        latest: dict[str, int | None] = {}
        rows_of = RowsByUser(sorted(found.values(), key=_id), lambda c: (c.phone, c.wa_id))
        heads_of = RowsByUser(heads, lambda h: (h[0], h[1]))
        for p in phones:
            mine = rows_of.of(p)
            active[p] = mine
            # Live while lease_expires_at >= now, as the claim sees it.
            if any(c.lease_expires_at is not None and c.lease_expires_at >= now for c in mine):
                busy.add(p)
            latest[p] = max((h[2] for h in heads_of.of(p)), default=None)
        if self._pg:
            ids = sorted({c.id for p in phones if p not in busy for c in active[p]})
            locked = await lock_conversations(self._conn, ids)
            for p in phones:
                if any(c.id not in locked for c in active[p]):
                    busy.add(p)
        return {p: PhoneConversations(tuple(active[p]), p in busy, latest[p]) for p in phones}

    async def replied_to(self, wamids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in chunks(sorted(set(wamids))):
            rows = await self._conn.execute(
                select(M.wamid, M.conversation_id).where(M.wamid.in_(list(chunk)))
            )
            found.update((r.wamid, r.conversation_id) for r in rows)
        return found

    async def add_suppressions(self, rows: Sequence[Suppression]) -> int:
        """ON CONFLICT DO NOTHING on (sender, phone): the first opt-out's row stays."""
        if not rows:
            return 0
        maker = _insert_for(self._pg)
        values = [
            {"sender": r.sender, "phone": r.phone, "reason": r.reason, "created_at": r.created_at}
            for r in {(r.sender, r.phone): r for r in reversed(rows)}.values()
        ]
        stmt = maker(suppressions).values(values).on_conflict_do_nothing().returning(S.phone)
        return len((await self._conn.execute(stmt)).all())

    async def sent_steps(self, keys: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
        found: set[tuple[int, int]] = set()
        ids = sorted({cid for cid, _ in keys})
        wanted = set(keys)
        for chunk in chunks(ids):
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
        """ON CONFLICT DO NOTHING on the unique wamid: a concurrent processor's insert wins."""
        inserted: set[str] = set()
        maker = _insert_for(self._pg)
        for page in chunks(list(rows), 2_000):
            values = [
                {
                    "wamid": r.wamid,
                    "conversation_id": r.conversation_id,
                    "phone": r.phone,
                    "step": r.step,
                    "kind": r.kind,
                    "body": r.body,
                    "received_at": r.received_at,
                    "answer_kind": r.answer_kind,
                    "answer_option": r.answer_option,
                    "answer_number": r.answer_number,
                    "valid": r.valid,
                    "sender": r.sender,
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

    async def record_webhook_errors(self, rows: Sequence[NewWebhookError], now: datetime) -> None:
        await insert_webhook_errors(self._conn, rows, now)

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
        # asyncpg's executemany reports no rowcount (-1); the rows are this transaction's,
        # locked, so every change matches its row.
        return result.rowcount if result.rowcount >= 0 else len(params)


class WebhookSql(SqlCore):
    """The inbox: intake, backlog, and the processing transaction."""

    def webhook_transaction(self) -> AbstractAsyncContextManager[WebhookTx]:
        return self._webhook_transaction()

    @asynccontextmanager
    async def _webhook_transaction(self) -> AsyncIterator[WebhookTx]:
        async with self._write() as conn:
            tx = SqlWebhookTx(conn, self.backend == "postgresql")
            yield tx
            if tx.wake_at is not None:
                await self._after_enroll(conn, tx.wake_at)
        if tx.wake_at is not None:
            self._after_enroll_commit()

    async def insert_inbox(self, bodies: Sequence[str], now: datetime) -> None:
        if not bodies:
            return
        async with self._write() as conn:
            for page in chunks(list(bodies), 1_000):
                await conn.execute(
                    insert(inbox), [{"received_at": now, "body": body} for body in page]
                )

    async def inbox_backlog(self) -> InboxBacklog:
        from dripline.store.report_types import InboxBacklog

        async with self._read() as conn:
            waiting, oldest = (
                await conn.execute(
                    select(func.count(), func.min(X.received_at))
                    .select_from(inbox)
                    .where(X.processed_at.is_(None))
                )
            ).one()
            errors = (
                await conn.execute(
                    select(func.count())
                    .select_from(inbox)
                    .where(X.processed_at.is_not(None), X.error.is_not(None))
                )
            ).scalar_one()
        return InboxBacklog(int(waiting), int(errors), oldest)
