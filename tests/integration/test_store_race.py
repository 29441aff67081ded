"""Claim race: several processes, two tasks each, drain 10,000 due rows; every row is
claimed exactly once (PostgreSQL: SKIP LOCKED; SQLite: BEGIN IMMEDIATE)."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dripline.store import Enrollment, open_store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROWS = 10_000
LIMIT = 50
TASKS = 2


# Set in each pool process: all of them start claiming together, or the first to start
# could drain everything before the last one has even connected.
_START: Any = None


def _init(start: Any) -> None:
    global _START
    _START = start


async def _drain(url: str, worker: str) -> list[int]:
    store = await open_store(url, pool_size=TASKS, auto_migrate=False)
    try:
        await store.backlog(NOW)  # connected and ready
        _START.wait(60)

        async def task() -> list[int]:
            got: list[int] = []
            while batch := await store.claim_due(LIMIT, 3600, worker, NOW):
                got.extend(c.id for c in batch)
            return got

        parts = await asyncio.gather(*(task() for _ in range(TASKS)))
    finally:
        await store.close()
    return [cid for part in parts for cid in part]


def claim_in_process(url: str, worker: str) -> list[int]:
    """Entry point of each spawned process."""
    return asyncio.run(_drain(url, worker))


async def _race(url: str, processes: int) -> None:
    store = await open_store(url)
    try:
        items = [
            Enrollment(f"+1415{i:07d}", "race", at=NOW - timedelta(seconds=i % 997))
            for i in range(ROWS)
        ]
        expected = {r.id for r in await store.enroll(items, NOW)}
        assert len(expected) == ROWS
        ctx = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        start = ctx.Barrier(processes)
        with ctx.Pool(processes, initializer=_init, initargs=(start,)) as pool:
            pending = pool.starmap_async(
                claim_in_process, [(url, f"worker-{i}") for i in range(processes)]
            )
            results = await loop.run_in_executor(None, pending.get, 120)
        counts = Counter(cid for result in results for cid in result)
        assert set(counts) == expected
        assert max(counts.values()) == 1
        # Every process took part (a single winner would prove nothing about races).
        assert all(result for result in results)
        backlog = await store.backlog(NOW)
        assert (backlog.due_now, backlog.leased) == (0, ROWS)
    finally:
        await store.close()


@pytest.mark.postgres
@pytest.mark.slow
async def test_claim_race_postgres(postgres_url: str) -> None:
    await _race(postgres_url, processes=4)


@pytest.mark.slow
async def test_claim_race_sqlite(sqlite_url: str) -> None:
    await _race(sqlite_url, processes=2)
