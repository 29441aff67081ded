"""Enrollment and the conversation queries behind the HTTP API and the answers export.

Lists are keyset-paged on the primary key (`id > cursor ORDER BY id LIMIT n`), so page
ten thousand costs what page one does; the export reads the same way, one page of
conversations and their answers at a time, so a million rows never sit in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dripline.errors import StoreError
from dripline.store.computed import enroll_results
from dripline.store.identity import lifted_suppressions, suppression_phones
from dripline.store.schema import (
    ACTIVE_STATES,
    UTCDateTime,
    conversations,
    inbound_messages,
    messages,
    suppressions,
)
from dripline.store.sql.core import (
    ACTIVE,
    CONVERSATION_COLUMNS,
    INBOUND_COLUMNS,
    INSERT_PAGE,
    MESSAGE_COLUMNS,
    SqlCore,
    chunks,
    conversation_from_row,
    inbound_from_row,
    message_from_row,
)
from dripline.store.types import (
    CANCELLED,
    OPT_OUT_KIND,
    Conversation,
    Enrollment,
    EnrollResult,
    Inbound,
    Message,
    Suppression,
)

if TYPE_CHECKING:
    from dripline.store.webhook_types import (
        CancelOutcome,
    )

__all__ = ["ConversationSql"]

C = conversations.c
M = messages.c
I = inbound_messages.c  # noqa: E741 -- mirrors C and M
S = suppressions.c

_ENROLL_RETRIES = 5

_CANCEL = (
    update(conversations)
    .where(
        C.id == bindparam("b_id"),
        C.state.in_(ACTIVE_STATES),
        or_(
            C.lease_expires_at.is_(None),
            C.lease_expires_at <= bindparam("b_now", type_=UTCDateTime),
        ),
    )
    .values(
        state=CANCELLED,
        next_send_at=None,
        lease_owner=None,
        lease_expires_at=None,
        last_error="cancelled through the API",
        updated_at=bindparam("b_now", type_=UTCDateTime),
    )
    .returning(*CONVERSATION_COLUMNS)
)


class ConversationSql(SqlCore):
    """Enrollment, and reading and cancelling conversations."""

    def __init__(self, engine: AsyncEngine, target: str) -> None:
        super().__init__(engine, target)
        self._existing_active = select(C.id, C.phone, C.flow).where(
            ACTIVE, C.phone.in_(bindparam("b_phones", expanding=True))
        )
        self._insert_conversations = insert(conversations).returning(C.id, C.phone, C.flow)

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
                ids, created, earliest = await self._enroll_once(items, first, now)
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
        return enroll_results(items, ids, created)

    async def _lift_suppressions(self, conn: AsyncConnection, items: Sequence[Enrollment]) -> None:
        """Refuse suppressed numbers (SuppressedError, rolling back), or delete the
        suppressions that items stating a new opt-in lift (`store.identity`)."""
        found: list[Suppression] = []
        for chunk in chunks(suppression_phones(items)):
            rows = await conn.execute(select(*suppressions.c).where(S.phone.in_(list(chunk))))
            found += [Suppression(*r) for r in rows]
        for r in lifted_suppressions(items, found) if found else ():
            await conn.execute(delete(suppressions).where(S.sender == r.sender, S.phone == r.phone))

    async def _enroll_once(
        self,
        items: Sequence[Enrollment],
        first: Mapping[tuple[str, str], Enrollment],
        now: datetime,
    ) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]], datetime | None]:
        ids: dict[tuple[str, str], int] = {}
        created: set[tuple[str, str]] = set()
        earliest: datetime | None = None
        async with self._write() as conn:
            await self._lift_suppressions(conn, items)
            phones = sorted({phone for phone, _ in first})
            for chunk in chunks(phones):
                rows = await conn.execute(self._existing_active, {"b_phones": list(chunk)})
                for id_, phone, flow in rows:
                    if (phone, flow) in first:
                        ids[(phone, flow)] = id_
            seen = await self._last_inbound(conn, [k[0] for k in first if k not in ids])
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
                        # The user's window may already be open: they wrote to us before
                        # (another conversation, or with none).
                        # (to this conversation's number: the window is per number).
                        "last_inbound_at": seen.get((item.phone, item.sender)),
                        "name": item.name,
                        "timezone": item.timezone,
                        "sender": item.sender,
                        "fields": dict(item.fields) if item.fields else None,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            for page in chunks(new, INSERT_PAGE):
                rows = await conn.execute(self._insert_conversations, list(page))
                for id_, phone, flow in rows:
                    ids[(phone, flow)] = id_
                    created.add((phone, flow))
            if earliest is not None:
                await self._after_enroll(conn, earliest)
        return ids, created, earliest

    @staticmethod
    async def _last_inbound(
        conn: AsyncConnection, phones: Sequence[str]
    ) -> dict[tuple[str, str | None], datetime]:
        """Each (phone, business number)'s latest inbound message, if the user ever
        wrote to that number (its window's start); number None: the default."""
        seen: dict[tuple[str, str | None], datetime] = {}
        for chunk in chunks(sorted(set(phones))):
            rows = await conn.execute(
                select(I.phone, I.sender, func.max(I.received_at))
                .where(I.phone.in_(list(chunk)))
                .group_by(I.phone, I.sender)
            )
            for phone, sender, at in rows:
                if at is not None:
                    seen[(phone, sender)] = at
        return seen

    # reading ---------------------------------------------------------------------
    async def conversations_by_ids(self, ids: Sequence[int]) -> dict[int, Conversation]:
        out: dict[int, Conversation] = {}
        unique = sorted(set(ids))
        async with self._read() as conn:
            for start in range(0, len(unique), 5_000):
                chunk = unique[start : start + 5_000]
                rows = await conn.execute(select(*CONVERSATION_COLUMNS).where(C.id.in_(chunk)))
                for r in rows:
                    out[r.id] = conversation_from_row(r)
        return out

    async def conversation_detail(
        self, conversation_id: int
    ) -> tuple[Conversation, list[Message], list[Inbound]] | None:
        async with self._read() as conn:
            row = (
                await conn.execute(select(*CONVERSATION_COLUMNS).where(C.id == conversation_id))
            ).one_or_none()
            if row is None:
                return None
            msgs = await conn.execute(
                select(*MESSAGE_COLUMNS).where(M.conversation_id == conversation_id).order_by(M.id)
            )
            history = [message_from_row(m) for m in msgs]
            inbound = await conn.execute(
                select(*INBOUND_COLUMNS)
                .where(I.conversation_id == conversation_id)
                .order_by(I.received_at, I.id)
            )
            answers = [inbound_from_row(a) for a in inbound]
        return conversation_from_row(row), history, answers

    async def list_conversations(
        self,
        *,
        state: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        after_id: int = 0,
    ) -> list[Conversation]:
        stmt = select(*CONVERSATION_COLUMNS).where(C.id > after_id).order_by(C.id).limit(limit)
        if state is not None:
            stmt = stmt.where(C.state == state)
        if flow is not None:
            stmt = stmt.where(C.flow == flow)
        async with self._read() as conn:
            rows = await conn.execute(stmt)
            return [conversation_from_row(r) for r in rows]

    async def cancel_conversation(self, conversation_id: int, now: datetime) -> CancelOutcome:
        from dripline.store.webhook_types import CancelOutcome

        async with self._write() as conn:
            row = (
                await conn.execute(_CANCEL, {"b_id": conversation_id, "b_now": now})
            ).one_or_none()
            if row is not None:
                return CancelOutcome("cancelled", conversation_from_row(row))
            row = (
                await conn.execute(select(*CONVERSATION_COLUMNS).where(C.id == conversation_id))
            ).one_or_none()
        if row is None:
            return CancelOutcome("missing", None)
        record = conversation_from_row(row)
        if record.state == CANCELLED:
            return CancelOutcome("already", record)
        if record.state in ACTIVE_STATES:
            return CancelOutcome("busy", record)
        return CancelOutcome("final", record)

    async def answer_pages(
        self, flow: str, *, page_size: int = 1_000
    ) -> AsyncIterator[list[tuple[Conversation, list[Inbound]]]]:
        after = 0
        while True:
            async with self._read() as conn:
                rows = (
                    await conn.execute(
                        select(*CONVERSATION_COLUMNS)
                        .where(C.flow == flow, C.id > after)
                        .order_by(C.id)
                        .limit(page_size)
                    )
                ).all()
                if not rows:
                    return
                ids = [r.id for r in rows]
                inbound = await conn.execute(
                    select(*INBOUND_COLUMNS)
                    .where(
                        I.conversation_id.in_(ids),
                        I.step.is_not(None),
                        I.kind != OPT_OUT_KIND,
                    )
                    .order_by(I.conversation_id, I.received_at, I.id)
                )
                by_conv: dict[int, list[Inbound]] = {}
                for a in inbound:
                    by_conv.setdefault(a.conversation_id, []).append(inbound_from_row(a))
            yield [(conversation_from_row(r), by_conv.get(r.id, [])) for r in rows]
            after = ids[-1]

    async def flows_in_use(self) -> set[str]:
        async with self._read() as conn:
            rows = await conn.execute(select(C.flow).distinct())
            return {row[0] for row in rows}
