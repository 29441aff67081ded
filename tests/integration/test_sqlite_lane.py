"""SQLite's lane (store/sqlite_lane.py): one transaction per call on its own thread,
all or nothing, driver errors as dripline's."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dripline.errors import DatabaseUnavailable, StoreError
from dripline.store.sqlite_lane import SqliteLane


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
