"""The PostgreSQL backend (asyncpg): many workers on many machines.

Claims use `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on each other's
rows; `record_results` is one `UPDATE ... FROM unnest(...)` statement per table.
Wake-ups use LISTEN/NOTIFY on one dedicated connection, opened on first use.

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
from sqlalchemy import Select, Table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from dripline.store.schema import UTCDateTime
from dripline.store.sql import SqlStore
from dripline.store.sql.core import CHUNK, chunks
from dripline.store.types import NONFINAL_STATUSES, Outcome
from dripline.store.urls import DatabaseUrl

__all__ = ["NOTIFY_CHANNEL", "PostgresStore", "describe_target"]

NOTIFY_CHANNEL = "dripline_due"
_RECONNECT_MAX_S = 30.0

_NONFINAL = ", ".join(f"'{s}'" for s in NONFINAL_STATUSES)

# One statement writes a whole batch: both updates run in one snapshot, atomically.
_RECORD_SQL = text(
    f"""
WITH msg AS (
    UPDATE messages AS m SET
        status = CASE WHEN m.status IN ({_NONFINAL}) THEN v.status ELSE m.status END,
        error_code = CASE WHEN m.status IN ({_NONFINAL}) THEN v.error_code
                          ELSE m.error_code END,
        error_title = CASE WHEN m.status IN ({_NONFINAL}) THEN v.error_title
                           ELSE m.error_title END,
        status_at = CASE WHEN m.status IN ({_NONFINAL}) THEN :now ELSE m.status_at END,
        wamid = COALESCE(v.wamid, m.wamid),
        sent_at = COALESCE(v.sent_at, m.sent_at),
        latency_ms = COALESCE(v.latency_ms, m.latency_ms),
        updated_at = :now
    FROM unnest(
        CAST(:m_id AS BIGINT[]), CAST(:m_status AS TEXT[]), CAST(:m_wamid AS TEXT[]),
        CAST(:m_code AS INTEGER[]), CAST(:m_title AS TEXT[]),
        CAST(:m_sent AS TIMESTAMPTZ[]), CAST(:m_latency AS FLOAT8[])
    ) AS v(id, status, wamid, error_code, error_title, sent_at, latency_ms)
    WHERE m.id = v.id
    RETURNING m.id
), conv AS (
    UPDATE conversations AS c SET
        state = v.state, step = v.step, purpose = v.purpose,
        next_send_at = v.next_send_at, attempts = v.attempts, last_error = v.last_error,
        wa_id = COALESCE(v.wa_id, c.wa_id),
        lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
    FROM unnest(
        CAST(:c_id AS BIGINT[]), CAST(:c_state AS TEXT[]), CAST(:c_step AS INTEGER[]),
        CAST(:c_purpose AS TEXT[]), CAST(:c_next AS TIMESTAMPTZ[]),
        CAST(:c_attempts AS INTEGER[]), CAST(:c_error AS TEXT[]), CAST(:c_wa AS TEXT[])
    ) AS v(id, state, step, purpose, next_send_at, attempts, last_error, wa_id)
    WHERE c.id = v.id AND c.lease_owner = :worker AND c.lease_expires_at >= :now
    RETURNING c.id
)
SELECT (SELECT count(*) FROM conv), (SELECT count(*) FROM msg)
"""
)

# A reservation's prior message rows, looked up by their unique key one by one (the
# LIMIT keeps each lookup a subquery the planner cannot turn into a join). Written as a
# join, or as `conversation_id IN (...)`, the plan depended on the statistics of
# `messages`: with none (a new table, autovacuum off or not yet run) the planner
# guessed half the table matched and read every row of it for each reservation, a cost
# that grew with every message sent (issue 14: a drain's rate fell by two thirds).
# FOR UPDATE: a webhook must not change a status between our read and our write.
_PRIOR_SQL = text(
    """
SELECT m.id, m.conversation_id, m.step, m.purpose, m.status, m.attempts, m.wamid,
       m.error_code, m.status_at, m.reserved_at
FROM unnest(CAST(:k_conv AS BIGINT[]), CAST(:k_step AS INTEGER[]), CAST(:k_purpose AS TEXT[]))
     AS k(conversation_id, step, purpose)
CROSS JOIN LATERAL (
    SELECT m.id, m.conversation_id, m.step, m.purpose, m.status, m.attempts, m.wamid,
           m.error_code, m.status_at, COALESCE(m.reserved_at, m.created_at) AS reserved_at
    FROM messages AS m
    WHERE m.conversation_id = k.conversation_id AND m.step = k.step AND m.purpose = k.purpose
    LIMIT 1
    FOR UPDATE
) AS m
"""
).columns(status_at=UTCDateTime, reserved_at=UTCDateTime)

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
        self._event: asyncio.Event | None = None
        self._listening = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    # dialect-specific statements ---------------------------------------------
    def _due_ids(self) -> Any:
        # Rows another claimer is taking right now are skipped, not waited for.
        return self._due_select().with_for_update(skip_locked=True).scalar_subquery()

    def _build_lock_owned(self) -> Select[Any]:
        # Serializes reservations per conversation; NO KEY keeps FK inserts unblocked.
        return super()._build_lock_owned().with_for_update(key_share=True)

    async def _read_prior(
        self, conn: AsyncConnection, wanted: set[tuple[int, int, str]]
    ) -> dict[tuple[int, int, str], Any]:
        prior: dict[tuple[int, int, str], Any] = {}
        for page in chunks(sorted(wanted), CHUNK):
            params = {
                "k_conv": [k[0] for k in page],
                "k_step": [k[1] for k in page],
                "k_purpose": [k[2] for k in page],
            }
            for r in await conn.execute(_PRIOR_SQL, params):
                prior[(r.conversation_id, r.step, r.purpose)] = r
        return prior

    def _upsert(self, table: Table) -> Any:
        stmt = pg_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={c.name: stmt.excluded[c.name] for c in table.c if c.name != "id"},
        )

    async def _record(
        self, conn: AsyncConnection, outcomes: Sequence[Outcome], worker_id: str, now: datetime
    ) -> int:
        msgs = [o.message for o in outcomes if o.message is not None]
        convs = [o.conversation for o in outcomes]
        params = {
            "now": _aware(now),
            "worker": worker_id,
            "m_id": [m.message_id for m in msgs],
            "m_status": [m.status for m in msgs],
            "m_wamid": [m.wamid for m in msgs],
            "m_code": [m.error_code for m in msgs],
            "m_title": [m.error_title for m in msgs],
            "m_sent": [_aware(m.sent_at) for m in msgs],
            "m_latency": [m.latency_ms for m in msgs],
            "c_id": [c.conversation_id for c in convs],
            "c_state": [c.state for c in convs],
            "c_step": [c.step for c in convs],
            "c_purpose": [c.purpose for c in convs],
            "c_next": [_aware(c.next_send_at) for c in convs],
            "c_attempts": [c.attempts for c in convs],
            "c_error": [c.last_error for c in convs],
            "c_wa": [c.wa_id for c in convs],
        }
        row = (await conn.execute(_RECORD_SQL, params)).one()
        return int(row[0])

    async def _after_enroll(self, conn: AsyncConnection, earliest: datetime) -> None:
        # Delivered at commit, to every listening dispatcher on any machine.
        payload = json.dumps({"earliest": earliest.isoformat()})
        await conn.execute(_NOTIFY_SQL, {"channel": NOTIFY_CHANNEL, "payload": payload})

    # wake-ups ------------------------------------------------------------------
    def wakeup_event(self) -> asyncio.Event:
        """Set on NOTIFY from any enroll, on any machine; also set after the listening
        connection was lost (so the caller re-checks). Never set with `pooler=True`."""
        if self._event is None:
            self._event = asyncio.Event()
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
        await super().close()
