"""Evidence about sends whose outcome was lost: statuses applied to later sends, and
when the webhook intake was up (see `Store.status_evidence`, `Store.intake_uptime`).

Off the hot path: the dispatcher asks only about the few unknown sends it meets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, func, select

from dripline.store.schema import intake, messages
from dripline.store.sql.core import SqlCore, ts
from dripline.store.types import EVIDENCE_SENDS

__all__ = ["EvidenceSql"]

M = messages.c
K = intake.c

# The earliest status among the first EVIDENCE_SENDS sends attempted with or after an
# unknown one (their last attempt), found on ix_messages_reserved_at.
_NEXT_SENDS = (
    select(M.webhook_at)
    .where(M.reserved_at >= ts("b_reserved"), M.id != bindparam("b_id"))
    .order_by(M.reserved_at)
    .limit(EVIDENCE_SENDS)
    .subquery()
)
_EVIDENCE = select(func.min(_NEXT_SENDS.c.webhook_at)).where(
    _NEXT_SENDS.c.webhook_at <= ts("b_before")
)
_UPTIME = (
    select(K.started_at, K.heartbeat_at)
    .where(K.heartbeat_at >= ts("b_since"))
    .order_by(K.started_at, K.id)
)
_FORGET = delete(intake).where(K.heartbeat_at < ts("b_old"))


class EvidenceSql(SqlCore):
    async def status_evidence(
        self, messages: Sequence[tuple[int, datetime]], before: datetime
    ) -> dict[int, datetime]:
        found: dict[int, datetime] = {}
        if not messages:
            return found
        async with self._read() as conn:
            for message_id, reserved_at in messages:
                params = {
                    "b_id": message_id,
                    "b_reserved": reserved_at,
                    "b_before": before,
                }
                value = await conn.scalar(_EVIDENCE, params)
                if isinstance(value, datetime):
                    found[message_id] = value
        return found

    async def intake_uptime(self, since: datetime) -> list[tuple[datetime, datetime]]:
        async with self._read() as conn:
            rows = (await conn.execute(_UPTIME, {"b_since": since})).all()
        return [(r.started_at, r.heartbeat_at) for r in rows]

    async def record_intake(
        self, intake_id: str, started_at: datetime, now: datetime, *, keep_s: float
    ) -> None:
        async with self._write() as conn:
            row = {"id": intake_id, "started_at": started_at, "heartbeat_at": now}
            await conn.execute(self._upsert(intake), row)
            await conn.execute(_FORGET, {"b_old": now - timedelta(seconds=keep_s)})
