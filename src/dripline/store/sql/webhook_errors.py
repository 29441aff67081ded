"""Value-level webhook errors (`entry[].changes[].value.errors[]`): the processor's insert
and the operator's read. A rare table (Meta sends these for the number or account, not
per message), so the read is one GROUP BY over `ix_webhook_errors_received_at`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dripline.store.schema import webhook_errors
from dripline.store.sql.core import SqlCore, chunks

if TYPE_CHECKING:
    from dripline.store.report_types import NewWebhookError, WebhookErrorCount

__all__ = ["WebhookErrorsSql", "insert_webhook_errors"]

E = webhook_errors.c
_TITLE_MAX, _DETAILS_MAX = 255, 1000


async def insert_webhook_errors(
    conn: AsyncConnection, rows: Sequence[NewWebhookError], now: datetime
) -> None:
    for page in chunks(list(rows), 1_000):
        await conn.execute(
            insert(webhook_errors),
            [
                {
                    "received_at": now,
                    "code": r.code,
                    "phone_number_id": r.phone_number_id,
                    "account_id": r.account_id,
                    "title": r.title[:_TITLE_MAX] if r.title else None,
                    "details": r.details[:_DETAILS_MAX] if r.details else None,
                    "inbox_id": r.inbox_id,
                }
                for r in page
            ],
        )


class WebhookErrorsSql(SqlCore):
    async def webhook_errors(self, since: datetime | None = None) -> list[WebhookErrorCount]:
        from dripline.store.report_types import WebhookErrorCount

        stmt = select(
            E.code, E.phone_number_id, func.count(), func.max(E.received_at), func.max(E.id)
        ).group_by(E.code, E.phone_number_id)
        if since is not None:
            stmt = stmt.where(E.received_at > since)
        async with self._read() as conn:
            groups = (await conn.execute(stmt)).all()
            last_ids = [int(g[4]) for g in groups]
            details = dict(
                (await conn.execute(select(E.id, E.details).where(E.id.in_(last_ids)))).all()
                if last_ids
                else []
            )
        found = [
            WebhookErrorCount(
                code=int(code),
                phone_number_id=number,
                count=int(n),
                last_at=last,  # max() keeps the column's type: aware UTC on both dialects
                details=details.get(last_id),
            )
            for code, number, n, last, last_id in groups
        ]
        found.sort(key=lambda e: (-e.count, e.code, e.phone_number_id or ""))
        return found
