"""What `/readyz` asks the database: its schema revision and the inbox's waiting rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from dripline.store.migrate import current_revision
from dripline.store.schema import inbox
from dripline.store.sql.core import SqlCore

if TYPE_CHECKING:
    from dripline.store.report_types import StoreHealth

__all__ = ["HealthSql"]

X = inbox.c


class HealthSql(SqlCore):
    """The store's side of readiness: one short read transaction."""

    async def health(self) -> StoreHealth:
        from dripline.store.report_types import StoreHealth

        async with self._read() as conn:
            revision = await conn.run_sync(current_revision)
            if revision is None:
                return StoreHealth(None, 0, None)
            # The partial index on unprocessed rows serves this; the rows with errors
            # (`inbox_backlog`) would scan the whole table, and readiness needs none.
            waiting, oldest = (
                await conn.execute(
                    select(func.count(), func.min(X.received_at))
                    .select_from(inbox)
                    .where(X.processed_at.is_(None))
                )
            ).one()
        return StoreHealth(revision, int(waiting), oldest)
