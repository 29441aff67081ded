"""The SQLite backend: one file in WAL mode, write transactions as BEGIN IMMEDIATE.

BEGIN IMMEDIATE takes the write lock up front, so two processes claiming at once queue
on the busy timeout instead of both reading and then deadlocking on the lock upgrade
(SQLITE_BUSY that no retry can resolve). Reads use a deferred BEGIN and never block.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, event, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import StaticPool

from dripline.errors import ConfigError
from dripline.store import sqlite_hot as hot
from dripline.store.schema import (
    UTCDateTime,
    conversations,
)
from dripline.store.sql import SqlStore
from dripline.store.sqlite_lane import SqliteLane
from dripline.store.types import Claim, Outcome, Reservation, ReservationResult, WorkerInfo
from dripline.store.urls import DatabaseUrl
from dripline.wake import Flag

__all__ = ["BUSY_TIMEOUT_S", "SqliteStore"]

# How long a writer waits for another process's transaction before DatabaseUnavailable.
BUSY_TIMEOUT_S = 30.0
WAL_SIZE_LIMIT_BYTES = 64 * 2**20

# Stores open on each file in this process: enroll wakes every one of them.
_STORES: dict[str, weakref.WeakSet[SqliteStore]] = {}


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver must not BEGIN by itself: the begin event below does, IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in (
            "PRAGMA journal_mode=WAL",
            # In WAL mode NORMAL is durable against application crashes; only an OS crash
            # or power loss can lose the last transactions, never corrupt the file.
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}",
            # A checkpoint cannot reset the WAL while any reader holds an older snapshot,
            # so a long read under steady writes grows it; SQLite never shrinks it by
            # itself. Measured in the soak (worker and `serve` on one 2M-row file): 56 MB
            # after 25,000 sends, 247 MB after 450,000, in bursts. Truncate it back to
            # this size whenever a checkpoint resets it.
            f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}",
        ):
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get("dripline_read"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class SqliteStore(SqlStore):
    """The embedded default: one machine, any number of processes on one file."""

    backend = "sqlite"

    def __init__(self, url: DatabaseUrl, *, pool_size: int = 2) -> None:
        if sqlite3.sqlite_version_info < (3, 35):
            raise ConfigError(
                f"SQLite {sqlite3.sqlite_version} is too old: dripline needs 3.35+ "
                "(UPDATE ... RETURNING); use PostgreSQL or a newer Python build"
            )
        path = url.sqlite_path
        if path is None:
            # One shared connection, or every checkout would see its own empty database.
            engine = create_async_engine(url.async_url, poolclass=StaticPool)
            key = f":memory:{id(engine)}"
        else:
            engine = create_async_engine(
                url.async_url,
                pool_size=pool_size,
                max_overflow=0,
                connect_args={"timeout": BUSY_TIMEOUT_S},
            )
            key = os.path.realpath(path)
        event.listen(engine.sync_engine, "connect", _on_connect)
        event.listen(engine.sync_engine, "begin", _on_begin)
        super().__init__(engine, path or ":memory:")
        # The dispatcher's claim, reserve, record, heartbeat, live-worker read and lease
        # extension in one thread trip each (sqlite_lane.py); an in-memory database is
        # one connection's, so it keeps the pool's.
        self._lane = (
            None
            if path is None
            else SqliteLane(
                path, target=path, busy_timeout_s=BUSY_TIMEOUT_S, on_connect=_on_connect
            )
        )
        self._key = key
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        _STORES.setdefault(key, weakref.WeakSet()).add(self)

    def _due_ids(self) -> Any:
        return (
            text(hot.DUE_IDS_SQL)
            .bindparams(bindparam("b_now", type_=UTCDateTime), bindparam("b_limit"))
            .columns(conversations.c.id)
        )

    async def claim_next(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> Claim:
        if self._lane is None:
            return await super().claim_next(limit, lease_ttl_s, worker_id, now)
        return await self._lane.write(
            lambda conn: hot.claim(conn, limit, lease_ttl_s, worker_id, now)
        )

    async def reserve(
        self, items: Sequence[Reservation], worker_id: str, now: datetime
    ) -> list[ReservationResult]:
        if self._lane is None or not items:
            return await super().reserve(items, worker_id, now)
        return await self._lane.write(lambda conn: hot.reserve(conn, items, worker_id, now))

    async def record_results(
        self, outcomes: Sequence[Outcome], worker_id: str, now: datetime
    ) -> int:
        if self._lane is None or not outcomes:
            return await super().record_results(outcomes, worker_id, now)
        return await self._lane.write(lambda conn: hot.record(conn, outcomes, worker_id, now))

    @property
    def claims_with_record(self) -> bool:
        return self._lane is not None

    async def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        limit: int,
        lease_ttl_s: float,
        worker_id: str,
        now: datetime,
    ) -> tuple[int, Claim]:
        if self._lane is None:
            return await super().record_and_claim(outcomes, limit, lease_ttl_s, worker_id, now)

        def work(conn: sqlite3.Connection) -> tuple[int, Claim]:
            recorded = hot.record(conn, outcomes, worker_id, now) if outcomes else 0
            return recorded, hot.claim(conn, limit, lease_ttl_s, worker_id, now)

        return await self._lane.write(work)

    async def heartbeat(self, worker: WorkerInfo, live_after_s: float) -> list[WorkerInfo]:
        if self._lane is None:
            return await super().heartbeat(worker, live_after_s)
        return await self._lane.write(lambda conn: hot.heartbeat(conn, worker, live_after_s))

    async def live_workers(self, now: datetime, *, live_after_s: float = 10.0) -> list[WorkerInfo]:
        if self._lane is None or not self._lane.in_use:
            return await super().live_workers(now, live_after_s=live_after_s)
        return await self._lane.read(lambda conn: hot.live_workers(conn, now, live_after_s))

    async def lane_revision(self) -> str | None:
        if self._lane is None:  # in memory: the pool's one connection
            return await super().lane_revision()
        return await self._lane.read(hot.schema_revision)

    async def unregister(self, worker_id: str) -> None:
        if self._lane is None or not self._lane.in_use:
            await super().unregister(worker_id)
            return
        await self._lane.write(lambda conn: hot.unregister(conn, worker_id))

    async def extend_leases(
        self, conversation_ids: Sequence[int], worker_id: str, lease_ttl_s: float, now: datetime
    ) -> list[int]:
        if self._lane is None or not conversation_ids:
            return await super().extend_leases(conversation_ids, worker_id, lease_ttl_s, now)
        return await self._lane.write(
            lambda conn: hot.extend_leases(conn, conversation_ids, worker_id, lease_ttl_s, now)
        )

    async def _record(
        self, conn: AsyncConnection, outcomes: Sequence[Outcome], worker_id: str, now: datetime
    ) -> int:
        msg_rows, conv_rows = hot.record_rows(outcomes, worker_id, now)
        if msg_rows:
            await conn.exec_driver_sql(hot.RECORD_MESSAGE_SQL, msg_rows)
        result = await conn.exec_driver_sql(hot.RECORD_CONVERSATION_SQL, conv_rows)
        return max(result.rowcount, 0)

    def _upsert(self, table: Table) -> Any:
        stmt = sqlite_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={c.name: stmt.excluded[c.name] for c in table.c if c.name != "id"},
        )

    def wakeup_event(self) -> asyncio.Event:
        """Set by any store in this process that enrolls into the same file.

        Enrollments from another process are not seen: the dispatcher's poll ceiling
        covers them."""
        if self._event is None:
            self._event = Flag()  # a dispatcher's sleep watches it without a task
            self._loop = asyncio.get_running_loop()
        return self._event

    def _signal(self) -> None:
        ev, loop = self._event, self._loop
        if ev is None or loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            ev.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)

    def _after_enroll_commit(self) -> None:
        for store in list(_STORES.get(self._key, ())):
            store._signal()

    async def close(self) -> None:
        stores = _STORES.get(self._key)
        if stores is not None:
            stores.discard(self)
            if not stores:
                _STORES.pop(self._key, None)
        if self._lane is not None:
            await self._lane.close()
        await super().close()
