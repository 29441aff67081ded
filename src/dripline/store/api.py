"""Queries behind the HTTP API and the answers export: read one, list, cancel, stream.

Lists are keyset-paged on the primary key (`id > cursor ORDER BY id LIMIT n`), so page
ten thousand costs what page one does; the export reads the same way, one page of
conversations and their answers at a time, so a million rows never sit in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, select, update

from dripline.store.schema import (
    ACTIVE_STATES,
    UTCDateTime,
    conversations,
    inbound_messages,
    messages,
)
from dripline.store.sql import SqlStore

__all__ = [
    "CANCELLED",
    "AnswerRecord",
    "CancelOutcome",
    "ConversationRecord",
    "MessageRecord",
    "answer_pages",
    "cancel_conversation",
    "conversation_detail",
    "conversations_by_ids",
    "list_conversations",
]

C = conversations.c
M = messages.c
I = inbound_messages.c  # noqa: E741 -- mirrors C and M

# The state of a conversation stopped through the API: final, never due again, and (being
# inactive) no obstacle to enrolling the same phone in the same flow again.
CANCELLED = "cancelled"
# Inbound rows with this kind are opt-out keywords, not answers.
OPT_OUT_KIND = "opt_out"


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    id: int
    phone: str
    flow: str
    name: str | None
    timezone: str | None
    fields: Mapping[str, Any]
    state: str
    step: int
    purpose: str
    next_send_at: datetime | None
    attempts: int
    last_error: str | None
    last_inbound_at: datetime | None
    leased: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    step: int
    purpose: str
    status: str
    wamid: str | None
    error_code: int | None
    error_title: str | None
    sent_at: datetime | None
    status_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    conversation_id: int | None
    step: int | None
    kind: str
    body: str | None
    wamid: str
    received_at: datetime


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


async def conversations_by_ids(
    store: SqlStore, ids: Sequence[int], now: datetime | None = None
) -> dict[int, ConversationRecord]:
    """The conversations with these ids (missing ones are absent)."""
    out: dict[int, ConversationRecord] = {}
    unique = sorted(set(ids))
    async with store._read() as conn:
        for start in range(0, len(unique), 5_000):
            chunk = unique[start : start + 5_000]
            rows = await conn.execute(select(*_COLUMNS).where(C.id.in_(chunk)))
            for r in rows:
                out[r.id] = _record(r, now)
    return out


async def conversation_detail(
    store: SqlStore, conversation_id: int, now: datetime | None = None
) -> tuple[ConversationRecord, list[MessageRecord], list[AnswerRecord]] | None:
    """One conversation with its messages and inbound answers (oldest first), or None."""
    async with store._read() as conn:
        row = (await conn.execute(select(*_COLUMNS).where(C.id == conversation_id))).one_or_none()
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
    store: SqlStore,
    *,
    state: str | None = None,
    flow: str | None = None,
    limit: int = 50,
    after_id: int = 0,
    now: datetime | None = None,
) -> list[ConversationRecord]:
    """Conversations with id > `after_id`, in id order, filtered by state and flow."""
    stmt = select(*_COLUMNS).where(C.id > after_id).order_by(C.id).limit(limit)
    if state is not None:
        stmt = stmt.where(C.state == state)
    if flow is not None:
        stmt = stmt.where(C.flow == flow)
    async with store._read() as conn:
        rows = await conn.execute(stmt)
        return [_record(r, now) for r in rows]


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """`result`: 'cancelled' (now), 'already' (was cancelled), 'busy' (a dispatcher holds
    its lease right now), 'final' (completed, failed or opted out), 'missing'."""

    result: str
    record: ConversationRecord | None


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


async def cancel_conversation(
    store: SqlStore, conversation_id: int, now: datetime
) -> CancelOutcome:
    """Stop an active conversation unless a dispatcher is sending to it this moment (its
    result write would overwrite the cancel; the caller retries shortly)."""
    async with store._write() as conn:
        row = (await conn.execute(_CANCEL, {"b_id": conversation_id, "b_now": now})).one_or_none()
        if row is not None:
            return CancelOutcome("cancelled", _record(row, now))
        row = (await conn.execute(select(*_COLUMNS).where(C.id == conversation_id))).one_or_none()
    if row is None:
        return CancelOutcome("missing", None)
    record = _record(row, now)
    if record.state == CANCELLED:
        return CancelOutcome("already", record)
    if record.state in ACTIVE_STATES:
        return CancelOutcome("busy", record)
    return CancelOutcome("final", record)


async def answer_pages(
    store: SqlStore, flow: str, *, page_size: int = 1_000
) -> AsyncIterator[list[tuple[ConversationRecord, list[AnswerRecord]]]]:
    """Every conversation of `flow` with its answers (opt-out keywords excluded), one
    keyset page at a time, each page its own short read transaction."""
    after = 0
    while True:
        async with store._read() as conn:
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
