"""Conversations moved in from another scheduler, each already part-way through its flow.

Like enrollment, but every row brings its own step, state, purpose and due time, and the
idempotency key is (phone, flow) in any state: re-running an import never starts a
conversation again, not even one that has finished since.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, insert, select
from sqlalchemy import exc as sa_exc

from dripline.errors import StoreError
from dripline.store.schema import conversations
from dripline.store.sql.core import INSERT_PAGE, SqlCore, chunks
from dripline.store.types import EnrollResult

if TYPE_CHECKING:
    from dripline.store.report_types import ImportedConversation

__all__ = ["ImportSql"]

C = conversations.c

_RETRIES = 5
# Rows another client inserts at the same moment collide on this index: retry, then find.
_ACTIVE_INDEX = "uq_conversations_active_phone_flow"


class ImportSql(SqlCore):
    """`import_conversations`."""

    async def import_conversations(
        self, items: Sequence[ImportedConversation], now: datetime
    ) -> list[EnrollResult]:
        if not items:
            return []
        first: dict[tuple[str, str], ImportedConversation] = {}
        for item in items:
            first.setdefault((item.phone, item.flow), item)
        for attempt in range(_RETRIES):
            try:
                ids, created, earliest = await self._import_once(first, now)
                break
            except StoreError as exc:
                cause = exc.__cause__
                if not (
                    isinstance(cause, sa_exc.IntegrityError)
                    and _ACTIVE_INDEX in str(cause)
                    and attempt + 1 < _RETRIES
                ):
                    raise
        if earliest is not None:
            self._after_enroll_commit()
        return [EnrollResult(ids[k], k in created) for k in ((i.phone, i.flow) for i in items)]

    async def _import_once(
        self, first: Mapping[tuple[str, str], ImportedConversation], now: datetime
    ) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]], datetime | None]:
        ids: dict[tuple[str, str], int] = {}
        created: set[tuple[str, str]] = set()
        earliest: datetime | None = None
        existing = (
            select(C.id, C.phone, C.flow)
            .where(C.phone.in_(bindparam("b_phones", expanding=True)))
            .order_by(C.id)
        )
        async with self._write() as conn:
            phones = sorted({phone for phone, _ in first})
            for chunk in chunks(phones):
                for id_, phone, flow in await conn.execute(existing, {"b_phones": list(chunk)}):
                    if (phone, flow) in first:
                        ids.setdefault((phone, flow), id_)  # the oldest one
            new = []
            for key, item in first.items():
                if key in ids:
                    continue
                if earliest is None or item.next_send_at < earliest:
                    earliest = item.next_send_at
                new.append(
                    {
                        "phone": item.phone,
                        "flow": item.flow,
                        "step": item.step,
                        "purpose": item.purpose,
                        "state": item.state,
                        "next_send_at": item.next_send_at,
                        "attempts": 0,
                        "name": item.name,
                        "timezone": item.timezone,
                        "sender": item.sender,
                        "fields": dict(item.fields) if item.fields else None,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            stmt = insert(conversations).returning(C.id, C.phone, C.flow)
            for page in chunks(new, INSERT_PAGE):
                for id_, phone, flow in await conn.execute(stmt, list(page)):
                    ids[(phone, flow)] = id_
                    created.add((phone, flow))
            if earliest is not None:
                await self._after_enroll(conn, earliest)
        return ids, created, earliest
