"""The PostgreSQL backend (asyncpg): many workers on many machines.

Claims use `FOR NO KEY UPDATE SKIP LOCKED`, so concurrent claimers never wait on each
other's rows; `record_results` is one `UPDATE ... FROM unnest(...)` statement per table. The
dispatcher's hot calls (claim, reserve, record, lease extension, heartbeat) run on a
connection of their own in asyncpg (`postgres_lane.py`, `postgres_hot.py`); every
other method goes through the SQLAlchemy engine. Wake-ups use LISTEN/NOTIFY on one
dedicated connection, opened on first use.

Behind a transaction-mode pooler (PgBouncer, Supabase), `pooler=True` disables every
prepared-statement cache and LISTEN (a pooler cannot keep a session for it), so
`wakeup_event()` is never set and dispatchers poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import uuid4

import asyncpg
from sqlalchemy import Select, Table, Update, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from dripline.store import postgres_hot as hot
from dripline.store.postgres_lane import PostgresLane
from dripline.store.schema import workers
from dripline.store.sql import SqlStore
from dripline.store.types import (
    Claim,
    Conversation,
    Outcome,
    Reservation,
    ReservationResult,
    WorkerInfo,
)
from dripline.store.urls import DatabaseUrl
from dripline.wake import Flag

__all__ = ["NOTIFY_CHANNEL", "PostgresStore", "describe_target"]

NOTIFY_CHANNEL = "dripline_due"
_RECONNECT_MAX_S = 30.0

_NOTIFY_SQL = text("SELECT pg_notify(:channel, :payload)")


def describe_target(url: DatabaseUrl) -> str:
    """host:port/database, for messages (never the password)."""
    u = url.async_url
    return f"{u.host or 'localhost'}:{u.port or 5432}/{u.database}"


def asyncpg_dsn(url: DatabaseUrl) -> str:
    """The URL as asyncpg.connect wants it (SQLAlchemy-only options removed)."""
    u = url.async_url.set(drivername="postgresql")
    query = {
        k: v
        for k, v in u.query.items()
        if k not in ("prepared_statement_cache_size", "async_fallback", "ssl")
    }
    # asyncpg's DSN knows libpq's `sslmode`; an `ssl` there would be sent to the server
    # as a setting, which it refuses, and the LISTEN connection would never open.
    if "ssl" in u.query:
        query["sslmode"] = u.query["ssl"]
    return u.set(query=query).render_as_string(hide_password=False)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use aware UTC datetimes")
    return value


class PostgresStore(SqlStore):
    """Shared database for several dispatchers; safe behind PgBouncer with pooler=True."""

    backend = "postgresql"

    def __init__(self, url: DatabaseUrl, *, pool_size: int = 2, pooler: bool = False) -> None:
        # Every statement planned for its own parameters, never from a cached generic
        # plan: PostgreSQL switches a prepared statement to a generic plan after five
        # runs and keeps it until the table's statistics change (never, with autovacuum
        # off). Measured on drains through the store: the reservation's and the
        # record's, made while `messages` was nearly empty, read every message row each
        # time, and on a 30,000-conversation table the claim's, made for an unknown
        # LIMIT, read every conversation. Each cost grew with the tables and their dead
        # tuples: the database's CPU per message rose tenfold over a 50,000 drain
        # (issue 14, bench/README.md scenario 15). Planning each run costs far less.
        connect_args: dict[str, Any] = {"server_settings": {"plan_cache_mode": "force_custom_plan"}}
        if pooler:
            # A transaction pooler hands each transaction a different server session, so
            # a statement prepared in one is missing (or another's) in the next. Each
            # statement is prepared afresh (so planned for its parameters); no setting is
            # sent, as PgBouncer refuses startup parameters it does not know.
            connect_args = {
                "statement_cache_size": 0,
                "prepared_statement_cache_size": 0,
                "prepared_statement_name_func": lambda: f"__dripline_{uuid4().hex}__",
            }
        engine = create_async_engine(
            url.async_url,
            pool_size=pool_size,
            max_overflow=0,
            # No pre-ping: it cost a round trip per transaction (about 0.4 ms of a 4.6 ms
            # claim). A connection a server restart broke fails its first statement
            # instead; SQLAlchemy then drops every pooled connection, `_errors` says
            # DatabaseUnavailable, and the caller's retry gets a fresh one.
            connect_args=connect_args,
        )
        super().__init__(engine, describe_target(url))
        self._dsn = asyncpg_dsn(url)
        self._pooler = pooler
        # The dispatcher's claim, reservation, record and lease extension: a connection
        # of its own, opened on first use (postgres_lane.py).
        self._lane = PostgresLane(self._dsn, target=self.target, pooler=pooler)
        self._hot: hot.HotSql | None = None
        self._event: asyncio.Event | None = None
        self._listening = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    # dialect-specific statements ---------------------------------------------
    def _build_claim(self) -> Update:
        # Rows another claimer is taking right now are skipped, not waited for
        # (`hot.claim_update`: the statement's shape, lock and commit).
        return hot.claim_update(self._due_select())

    def _build_lock_owned(self) -> Select[Any]:
        # Serializes reservations per conversation; NO KEY keeps FK inserts unblocked.
        return super()._build_lock_owned().with_for_update(key_share=True)

    def _upsert(self, table: Table) -> Any:
        stmt = pg_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={c.name: stmt.excluded[c.name] for c in table.c if c.name != "id"},
        )

    # the dispatcher's hot path, on the lane (postgres_lane.py) ----------------
    def _hot_sql(self) -> hot.HotSql:
        if self._hot is None:
            self._hot = hot.HotSql(self._claim, self._upsert(workers))
        return self._hot

    async def claim_due(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> list[Conversation]:
        if limit <= 0:
            return []
        sql = self._hot_sql()
        return await self._lane.run(
            lambda conn: hot.claim_due(conn, sql, limit, lease_ttl_s, worker_id, now)
        )

    async def claim_next(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> Claim:
        sql = self._hot_sql()
        return await self._lane.run(
            lambda conn: hot.claim(conn, sql, limit, lease_ttl_s, worker_id, now)
        )

    async def reserve(
        self, items: Sequence[Reservation], worker_id: str, now: datetime
    ) -> list[ReservationResult]:
        if not items:
            return []
        sql = self._hot_sql()
        return await self._lane.run(
            lambda conn: hot.reserve(conn, sql, items, worker_id, now), transaction=True
        )

    async def record_results(
        self, outcomes: Sequence[Outcome], worker_id: str, now: datetime
    ) -> int:
        if not outcomes:
            return 0
        sql = self._hot_sql()
        return await self._lane.run(lambda conn: hot.record(conn, sql, outcomes, worker_id, now))

    async def heartbeat(self, worker: WorkerInfo, live_after_s: float) -> list[WorkerInfo]:
        sql = self._hot_sql()
        return await self._lane.run(lambda conn: hot.heartbeat(conn, sql, worker, live_after_s))

    async def live_workers(self, now: datetime, *, live_after_s: float = 10.0) -> list[WorkerInfo]:
        if not self._lane.in_use:  # not a dispatcher: no lane connection for a read
            return await super().live_workers(now, live_after_s=live_after_s)
        sql = self._hot_sql()
        return await self._lane.run(lambda conn: hot.live_workers(conn, sql, now, live_after_s))

    async def extend_leases(
        self, conversation_ids: Sequence[int], worker_id: str, lease_ttl_s: float, now: datetime
    ) -> list[int]:
        if not conversation_ids:
            return []
        sql = self._hot_sql()
        return await self._lane.run(
            lambda conn: hot.extend(conn, sql, conversation_ids, worker_id, lease_ttl_s, now)
        )

    async def _after_enroll(self, conn: AsyncConnection, earliest: datetime) -> None:
        # Delivered at commit, to every listening dispatcher on any machine.
        payload = json.dumps({"earliest": earliest.isoformat()})
        await conn.execute(_NOTIFY_SQL, {"channel": NOTIFY_CHANNEL, "payload": payload})

    # wake-ups ------------------------------------------------------------------
    def wakeup_event(self) -> asyncio.Event:
        """Set on NOTIFY from any enroll, on any machine; also set after the listening
        connection was lost (so the caller re-checks). Never set with `pooler=True`."""
        if self._event is None:
            self._event = Flag()  # a dispatcher's sleep watches it without a task
            if not self._pooler:
                self._listener = asyncio.get_running_loop().create_task(
                    self._listen(), name="dripline-store-listen"
                )
        return self._event

    async def wakeup_ready(self) -> None:
        if self._listener is not None:
            await self._listening.wait()

    async def _listen(self) -> None:
        assert self._event is not None
        wake = self._event
        delay_s = 0.5
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, ev=lost: ev.set())
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_a: wake.set())
                self._listening.set()
                delay_s = 0.5
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: S110 -- any failure: poll until the next attempt
                pass
            finally:
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            wake.set()
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _RECONNECT_MAX_S)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._lane.close()
        await super().close()
