"""Small maintenance queries for the CLI (the demo's safety check)."""

from __future__ import annotations

from sqlalchemy import select

from dripline.store.schema import conversations
from dripline.store.sql import SqlStore

__all__ = ["flows_in_use"]


async def flows_in_use(store: SqlStore) -> set[str]:
    """The distinct flow names that have conversations in this database."""
    async with store._read() as conn:
        rows = await conn.execute(select(conversations.c.flow).distinct())
        return {row[0] for row in rows}
