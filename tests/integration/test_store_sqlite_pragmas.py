"""The embedded store's connection settings, read back from a real SQLite connection."""

from __future__ import annotations

from pathlib import Path

from dripline.store import open_store
from dripline.store.sqlite import WAL_SIZE_LIMIT_BYTES, SqliteStore


async def test_every_connection_bounds_the_wal(tmp_path: Path) -> None:
    # The soak grew the -wal file to 247 MB after 450,000 sends (long reads keep a
    # checkpoint from resetting it, and SQLite never shrinks it by itself).
    store = await open_store(f"sqlite:///{tmp_path / 'd.db'}", pool_size=2)
    try:
        assert isinstance(store, SqliteStore)
        async with store._engine.connect() as conn:  # the pool's own connection
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            limit = (await conn.exec_driver_sql("PRAGMA journal_size_limit")).scalar()
    finally:
        await store.close()
    assert (mode, limit) == ("wal", WAL_SIZE_LIMIT_BYTES)
    assert 16 * 2**20 <= WAL_SIZE_LIMIT_BYTES <= 256 * 2**20
