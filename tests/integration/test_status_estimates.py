"""`dripline status` on a big table: PostgreSQL's statistics instead of a full count, and
the document says so; SQLite always counts."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from dripline.status_report import gather_status, state_counts
from dripline.store import Enrollment, Store, open_store


async def _enroll(store: Store, n: int) -> None:
    now = datetime.now(UTC)
    await store.enroll(
        [Enrollment(phone=f"+1555200{i:04d}", flow="demo", at=now) for i in range(n)], now
    )


@pytest.mark.postgres
async def test_postgres_estimates_past_the_threshold_and_counts_below(postgres_url: str) -> None:
    store = await open_store(postgres_url)
    try:
        await _enroll(store, 40)
        # Never analyzed: no statistics, so an exact count whatever the threshold.
        assert await store.conversations_by_state_estimate(0) is None
        conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute("ANALYZE conversations")
        finally:
            await conn.close()
        exact = await store.conversations_by_state()
        # ANALYZE read all 40 rows: the estimate is the count.
        assert await store.conversations_by_state_estimate(0) == exact
        assert await store.conversations_by_state_estimate(41) is None
        assert await state_counts(store, exact_up_to=0) == (exact, True)
        assert await state_counts(store, exact_up_to=41) == (exact, False)
        doc = await gather_status(store)  # 40 rows: far below the default threshold
        assert doc["conversations_estimated"] is False
        assert doc["conversations"] == exact
    finally:
        await store.close()


async def test_sqlite_always_counts(sqlite_url: str) -> None:
    store = await open_store(sqlite_url)
    try:
        await _enroll(store, 3)
        assert await store.conversations_by_state_estimate(0) is None
        states, estimated = await state_counts(store, exact_up_to=0)
        assert (states["pending"], estimated) == (3, False)
    finally:
        await store.close()
