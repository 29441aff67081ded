"""Retention on SQL: prune old processed webhook bodies and unanswered texts, and forget
one person (docs/data.md)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update

from dripline.store.schema import conversations, inbound_messages, inbox, messages
from dripline.store.sql.core import SqlCore, ts

if TYPE_CHECKING:
    from dripline.store.report_types import ForgetResult, PruneResult

__all__ = ["RetentionSql", "json_string_pattern"]

C = conversations.c
M = messages.c
I = inbound_messages.c  # noqa: E741 -- mirrors C and M
X = inbox.c


def json_string_pattern(phone: str) -> str:
    """A LIKE pattern for the number as Meta writes it in a body: `"14155550123"`."""
    digits = phone.lstrip("+")
    return f'%"{digits}"%'


class RetentionSql(SqlCore):
    async def prune(self, before: datetime) -> PruneResult:
        from dripline.store.report_types import PruneResult

        async with self._write() as conn:
            rows = await conn.execute(
                delete(inbox).where(X.processed_at.is_not(None), X.processed_at < ts("before")),
                {"before": before},
            )
            cleared = await conn.execute(
                update(inbound_messages)
                .where(I.step.is_(None), I.body.is_not(None), I.received_at < ts("before"))
                .values(body=None),
                {"before": before},
            )
        return PruneResult(int(rows.rowcount or 0), int(cleared.rowcount or 0))

    async def forget(self, phone: str) -> ForgetResult:
        from dripline.store.report_types import ForgetResult

        pattern = json_string_pattern(phone)
        async with self._write() as conn:
            ids = list((await conn.execute(select(C.id).where(C.phone == phone))).scalars().all())
            inbound = await conn.execute(
                delete(inbound_messages).where(
                    (I.phone == phone) | I.conversation_id.in_(ids) if ids else I.phone == phone
                )
            )
            sent = await conn.execute(delete(messages).where(M.conversation_id.in_(ids)))
            convs = await conn.execute(delete(conversations).where(C.id.in_(ids)))
            bodies = await conn.execute(
                delete(inbox).where(X.processed_at.is_not(None), X.body.like(pattern))
            )
            waiting = (
                await conn.execute(
                    select(func.count())
                    .select_from(inbox)
                    .where(X.processed_at.is_(None), X.body.like(pattern))
                )
            ).scalar_one()
        return ForgetResult(
            conversations=int(convs.rowcount or 0),
            messages=int(sent.rowcount or 0),
            inbound=int(inbound.rowcount or 0),
            inbox_rows=int(bodies.rowcount or 0),
            inbox_waiting=int(waiting),
        )
