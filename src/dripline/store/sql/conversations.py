"""Enrollment and the conversation queries behind the HTTP API and the answers export.

Lists are keyset-paged on the primary key (`id > cursor ORDER BY id LIMIT n`), so page
ten thousand costs what page one does; the export reads the same way, one page of
conversations and their answers at a time, so a million rows never sit in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from dripline.errors import StoreError
from dripline.store.schema import (
    ACTIVE_STATES,
    UTCDateTime,
    conversations,
    inbound_messages,
    messages,
)
from dripline.store.sql.core import ACTIVE, INSERT_PAGE, SqlCore, chunks
from dripline.store.types import (
    CANCELLED,
    OPT_OUT_KIND,
    AnswerRecord,
    CancelOutcome,
    ConversationRecord,
    Enrollment,
    EnrollResult,
    MessageRecord,
)

__all__ = ["ConversationSql"]

C = conversations.c
M = messages.c
I = inbound_messages.c  # noqa: E741 -- mirrors C and M

_ENROLL_RETRIES = 5

_COLUMNS = (
    C.id,
    C.phone,
    C.flow,
    C.name,
    C.timezone,
    C.fields,
    C.state,
    C.step,
    C.purpose,
    C.next_send_at,
    C.attempts,
    C.last_error,
    C.last_inbound_at,
    C.lease_expires_at,
    C.created_at,
    C.updated_at,
)


def _record(r: Any, now: datetime | None) -> ConversationRecord:
    leased = r.lease_expires_at is not None and (now is None or r.lease_expires_at > now)
    return ConversationRecord(
        id=r.id,
        phone=r.phone,
        flow=r.flow,
        name=r.name,
        timezone=r.timezone,
        fields=r.fields or {},
        state=r.state,
        step=r.step,
        purpose=r.purpose,
        next_send_at=r.next_send_at,
        attempts=r.attempts,
        last_error=r.last_error,
        last_inbound_at=r.last_inbound_at,
        leased=leased,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _answer(r: Any) -> AnswerRecord:
    return AnswerRecord(
        conversation_id=r.conversation_id,
        step=r.step,
        kind=r.kind,
        body=r.body,
        wamid=r.wamid,
        received_at=r.received_at,
    )


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
    .returning(*_COLUMNS)
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
            for chunk in chunks(phones):
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
            for page in chunks(new, INSERT_PAGE):
                rows = await conn.execute(self._insert_conversations, list(page))
                for id_, phone, flow in rows:
                    ids[(phone, flow)] = id_
                    created.add((phone, flow))
            if earliest is not None:
                await self._after_enroll(conn, earliest)
        return ids, created, earliest

    # reading ---------------------------------------------------------------------
    async def conversations_by_ids(
        self, ids: Sequence[int], now: datetime | None = None
    ) -> dict[int, ConversationRecord]:
        out: dict[int, ConversationRecord] = {}
        unique = sorted(set(ids))
        async with self._read() as conn:
            for start in range(0, len(unique), 5_000):
                chunk = unique[start : start + 5_000]
                rows = await conn.execute(select(*_COLUMNS).where(C.id.in_(chunk)))
                for r in rows:
                    out[r.id] = _record(r, now)
        return out

    async def conversation_detail(
        self, conversation_id: int, now: datetime | None = None
    ) -> tuple[ConversationRecord, list[MessageRecord], list[AnswerRecord]] | None:
        async with self._read() as conn:
            row = (
                await conn.execute(select(*_COLUMNS).where(C.id == conversation_id))
            ).one_or_none()
            if row is None:
                return None
            msgs = await conn.execute(
                select(
                    M.id,
                    M.step,
                    M.purpose,
                    M.status,
                    M.wamid,
                    M.error_code,
                    M.error_title,
                    M.sent_at,
                    M.status_at,
                    M.created_at,
                )
                .where(M.conversation_id == conversation_id)
                .order_by(M.id)
            )
            history = [
                MessageRecord(
                    id=m.id,
                    step=m.step,
                    purpose=m.purpose,
                    status=m.status,
                    wamid=m.wamid,
                    error_code=m.error_code,
                    error_title=m.error_title,
                    sent_at=m.sent_at,
                    status_at=m.status_at,
                    created_at=m.created_at,
                )
                for m in msgs
            ]
            inbound = await conn.execute(
                select(I.conversation_id, I.step, I.kind, I.body, I.wamid, I.received_at)
                .where(I.conversation_id == conversation_id)
                .order_by(I.received_at, I.id)
            )
            answers = [_answer(a) for a in inbound]
        return _record(row, now), history, answers

    async def list_conversations(
        self,
        *,
        state: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        after_id: int = 0,
        now: datetime | None = None,
    ) -> list[ConversationRecord]:
        stmt = select(*_COLUMNS).where(C.id > after_id).order_by(C.id).limit(limit)
        if state is not None:
            stmt = stmt.where(C.state == state)
        if flow is not None:
            stmt = stmt.where(C.flow == flow)
        async with self._read() as conn:
            rows = await conn.execute(stmt)
            return [_record(r, now) for r in rows]

    async def cancel_conversation(self, conversation_id: int, now: datetime) -> CancelOutcome:
        async with self._write() as conn:
            row = (
                await conn.execute(_CANCEL, {"b_id": conversation_id, "b_now": now})
            ).one_or_none()
            if row is not None:
                return CancelOutcome("cancelled", _record(row, now))
            row = (
                await conn.execute(select(*_COLUMNS).where(C.id == conversation_id))
            ).one_or_none()
        if row is None:
            return CancelOutcome("missing", None)
        record = _record(row, now)
        if record.state == CANCELLED:
            return CancelOutcome("already", record)
        if record.state in ACTIVE_STATES:
            return CancelOutcome("busy", record)
        return CancelOutcome("final", record)

    async def answer_pages(
        self, flow: str, *, page_size: int = 1_000
    ) -> AsyncIterator[list[tuple[ConversationRecord, list[AnswerRecord]]]]:
        after = 0
        while True:
            async with self._read() as conn:
                rows = (
                    await conn.execute(
                        select(*_COLUMNS)
                        .where(C.flow == flow, C.id > after)
                        .order_by(C.id)
                        .limit(page_size)
                    )
                ).all()
                if not rows:
                    return
                ids = [r.id for r in rows]
                inbound = await conn.execute(
                    select(I.conversation_id, I.step, I.kind, I.body, I.wamid, I.received_at)
                    .where(
                        I.conversation_id.in_(ids),
                        I.step.is_not(None),
                        I.kind != OPT_OUT_KIND,
                    )
                    .order_by(I.conversation_id, I.received_at, I.id)
                )
                by_conv: dict[int, list[AnswerRecord]] = {}
                for a in inbound:
                    by_conv.setdefault(a.conversation_id, []).append(_answer(a))
            yield [(_record(r, None), by_conv.get(r.id, [])) for r in rows]
            after = ids[-1]

    async def flows_in_use(self) -> set[str]:
        async with self._read() as conn:
            rows = await conn.execute(select(C.flow).distinct())
            return {row[0] for row in rows}
