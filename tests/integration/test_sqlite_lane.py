"""SQLite's lane (store/sqlite_lane.py): one transaction per call on its own thread,
all or nothing, driver errors as dripline's."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dripline.errors import DatabaseUnavailable, StoreError
from dripline.store import open_store
from dripline.store.base import Enrollment, WorkerInfo
from dripline.store.sql import SqlStore
from dripline.store.sqlite import SqliteStore
from dripline.store.sqlite_hot import NEXT_DUE_SQL, RECORD_MESSAGE_SQL
from dripline.store.sqlite_lane import SqliteLane
from tests.fixtures.dispatch import phones


def _lane(path: Path, busy_timeout_s: float = 5.0) -> SqliteLane:
    def on_connect(conn: Any, _record: Any) -> None:
        conn.execute("PRAGMA journal_mode=WAL")

    return SqliteLane(
        str(path), target=str(path), busy_timeout_s=busy_timeout_s, on_connect=on_connect
    )


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


async def test_a_call_commits_its_work(tmp_path: Path) -> None:
    path = tmp_path / "lane.db"
    lane = _lane(path)
    try:
        await lane.write(lambda conn: conn.execute("CREATE TABLE t (x NOT NULL)"))
        rows = await lane.write(
            lambda conn: conn.execute("INSERT INTO t VALUES (1) RETURNING x").fetchall()
        )
        assert rows == [(1,)]
    finally:
        await lane.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


async def test_a_failing_call_rolls_back_everything_and_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "lane.db"
    lane = _lane(path)

    def half(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (x NOT NULL)")
        conn.execute("INSERT INTO t VALUES (NULL)")  # IntegrityError

    try:
        with pytest.raises(StoreError, match="NOT NULL"):
            await lane.write(half)
        assert _tables(path) == []
        await lane.write(lambda conn: conn.execute("CREATE TABLE u (y)"))  # still usable
    finally:
        await lane.close()
    assert _tables(path) == ["u"]


async def test_a_file_locked_past_the_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "lane.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    lane = _lane(path, busy_timeout_s=0.05)
    try:
        with pytest.raises(DatabaseUnavailable, match="unavailable"):
            await lane.write(lambda conn: conn.execute("CREATE TABLE t (x)"))
        holder.execute("ROLLBACK")
        await lane.write(lambda conn: conn.execute("CREATE TABLE t (x)"))
    finally:
        holder.close()
        await lane.close()
    assert _tables(path) == ["t"]


async def test_the_lanes_heartbeat_and_lease_extension_match_sqlalchemys(
    sqlite_url: str,
) -> None:
    """The heartbeat and lease extension run on the lane in driver SQL (issue 14); the
    rows they write read back the same through SQLAlchemy, and the same calls through
    SQLAlchemy give the same answers."""
    store = await open_store(sqlite_url)
    assert isinstance(store, SqliteStore)
    base = SqlStore  # the same statements through SQLAlchemy
    now = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    stats = {"sent": 3, "alerts": ["a"], "tier": None, "senders": {"1": {"rate": 80.0}}}
    try:
        lane = await store.heartbeat(
            WorkerInfo("a", "h", 1, now, now, 40.0, 8, "static", stats), 10
        )
        pool = await base.heartbeat(
            store,
            WorkerInfo("b", "h", 2, now, now + timedelta(seconds=1), 40.0, 8, "tiers", {}),
            10,
        )
        assert lane == [pool[0]] and lane[0].stats == stats and lane[0].started_at == now
        assert await store.heartbeat(pool[1], 10) == pool  # the lane reads the pool's row
        assert store._lane is not None and store._lane._conn is not None  # it ran there
        assert await store.live_workers(now, live_after_s=10) == pool
        await store.enroll([Enrollment(phone=p, flow="demo", at=now) for p in phones(3)], now)
        ids = [c.id for c in await store.claim_due(3, 60, "w", now)]
        later = now + timedelta(seconds=30)
        assert await store.extend_leases(ids[:2], "w", 120, later) == ids[:2]
        assert await store.extend_leases(ids[2:], "x", 120, later) == []  # not x's
        past = now + timedelta(seconds=100)  # ids[2] lapsed at 60 s, the others live
        assert await store.extend_leases(ids, "w", 120, past) == ids[:2]
        assert await base.extend_leases(store, ids, "w", 120, past) == ids[:2]
    finally:
        await store.close()


async def test_the_live_workers_are_read_on_the_lane_as_sqlalchemy_reads_them(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy dispatcher reads the live workers every 0.1 s (control.py): on the lane in
    driver SQL, not through SQLAlchemy and aiosqlite; the same workers, in id order."""
    store = await open_store(sqlite_url)
    assert isinstance(store, SqliteStore)
    now = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    try:
        for wid, age in (("c", 1), ("a", 3), ("old", 30)):
            at = now - timedelta(seconds=age)
            await store.heartbeat(WorkerInfo(wid, "h", 1, at, at, 40.0, 8, "static", {}), 10)
        through_pool = await SqlStore.live_workers(store, now, live_after_s=10)
        assert [w.id for w in through_pool] == ["a", "c"]

        async def pool_read(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("read through SQLAlchemy")

        monkeypatch.setattr(SqlStore, "live_workers", pool_read)
        assert await store.live_workers(now, live_after_s=10) == through_pool
        assert [w.id for w in await store.live_workers(now, live_after_s=60)] == ["a", "c", "old"]
        # A process that never dispatched (`serve`, `status`) reads through the pool:
        # no lane thread or connection for it.
        other = await open_store(sqlite_url)
        try:
            with pytest.raises(AssertionError, match="through SQLAlchemy"):
                await other.live_workers(now, live_after_s=10)
            assert not other._lane.in_use  # type: ignore[attr-defined]
        finally:
            await other.close()
    finally:
        await store.close()


async def test_recording_a_message_builds_no_table_per_row(sqlite_url: str) -> None:
    """The record's message statement runs once per row (executemany): an `IN (...)`
    list in it made SQLite build an ephemeral table at each of the four, every row.
    Equalities instead; what it writes is the store contract's (final statuses kept)."""
    await (await open_store(sqlite_url)).close()  # the schema
    path = sqlite_url.split("///", 1)[1]
    with sqlite3.connect(path) as conn:
        plan = conn.execute("EXPLAIN " + RECORD_MESSAGE_SQL, [None] * 9).fetchall()
    assert [op for op in plan if op[1] == "OpenEphemeral"] == []


async def test_the_next_due_time_is_read_from_the_due_index(sqlite_url: str) -> None:
    """Every claim on the lane also reads the earliest due time left. As `min()` SQLite
    planned it on ix_conversations_state and read every active row (0.36 ms per claim
    with 2,000 pending, more as the backlog grows); it must walk the due index."""
    store = await open_store(sqlite_url)
    await store.close()
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        plan = " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + NEXT_DUE_SQL, ("x",)))
    assert "ix_conversations_due" in plan and "SCAN" not in plan, plan


async def test_a_cancelled_call_is_skipped_if_waiting_and_finishes_if_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lane.db"
    lane = _lane(path)
    started = threading.Event()

    def slow_insert(value: int) -> Any:
        def work(conn: sqlite3.Connection) -> None:
            started.set()
            time.sleep(0.2)
            conn.execute("INSERT INTO t VALUES (?)", (value,))

        return work

    try:
        await lane.write(lambda conn: conn.execute("CREATE TABLE t (x)"))
        running = asyncio.ensure_future(lane.write(slow_insert(1)))
        waiting = asyncio.ensure_future(lane.write(slow_insert(2)))
        await asyncio.to_thread(started.wait)
        running.cancel()  # its transaction is under way: it commits all the same
        waiting.cancel()  # not started: never runs
        for task in (running, waiting):
            with pytest.raises(asyncio.CancelledError):
                await task
        rows = await lane.write(lambda conn: conn.execute("SELECT x FROM t").fetchall())
        assert rows == [(1,)]
    finally:
        await lane.close()
    for thread in [t for t in threading.enumerate() if t.name == "dripline-sqlite"]:
        thread.join(5.0)  # closing ends the lane's thread
        assert not thread.is_alive()
