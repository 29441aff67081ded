"""Storage: `open_store(url)` picks the backend from the URL and returns a `Store`.

    store = await open_store("sqlite:///./dripline.db")           # embedded default
    store = await open_store("postgresql://u@db:5432/dripline")    # several workers
    store = await open_store(url, pooler=True)                     # behind PgBouncer
    store = await open_store("memory://")                          # tests, the simulator

Schema: an SQLite database is created or upgraded on first use (`auto_migrate`). A
PostgreSQL database is never migrated implicitly, because several workers on several
machines would race the DDL against live traffic: `open_store` raises `StoreError`
until the operator runs `dripline db upgrade` once. `memory://` opens a new, empty
in-memory store (`MemoryStore`; several processes' worth over one `MemoryDatabase` are
built directly); settings refuse it, since every command opens the database anew.
"""

from __future__ import annotations

import os

from sqlalchemy.ext.asyncio import AsyncConnection

from dripline.errors import ConfigError, DatabaseUnavailable, DriplineError, StoreError
from dripline.store.base import Store, WebhookTx
from dripline.store.memory import MemoryDatabase, MemoryStore
from dripline.store.migrate import current_revision, head_revision, upgrade_connection
from dripline.store.sql import SqlStore, first_line
from dripline.store.types import (
    ACTIVE_STATES,
    CANCELLED,
    CONVERSATION_STATES,
    LEASE_LOST,
    OPT_OUT_KIND,
    STATUS_RANK,
    THROUGHPUT_WINDOWS_S,
    BacklogCounts,
    BacklogSnapshot,
    CancelOutcome,
    Conversation,
    ConversationChange,
    ConversationUpdate,
    Enrollment,
    EnrollResult,
    ErrorCount,
    Inbound,
    InboxBacklog,
    InboxEntry,
    InboxRow,
    LagSummary,
    Message,
    MessageUpdate,
    NewInbound,
    Outcome,
    PhoneConversations,
    PoolUsage,
    Refusal,
    Reservation,
    ReservationResult,
    StatusResult,
    StatusUpdate,
    StoreSnapshot,
    WorkerInfo,
)
from dripline.store.urls import MEMORY_ONLY, DatabaseUrl, parse_database_url

__all__ = [
    "ACTIVE_STATES",
    "CANCELLED",
    "CONVERSATION_STATES",
    "LEASE_LOST",
    "OPT_OUT_KIND",
    "STATUS_RANK",
    "THROUGHPUT_WINDOWS_S",
    "BacklogCounts",
    "BacklogSnapshot",
    "CancelOutcome",
    "Conversation",
    "ConversationChange",
    "ConversationUpdate",
    "EnrollResult",
    "Enrollment",
    "ErrorCount",
    "Inbound",
    "InboxBacklog",
    "InboxEntry",
    "InboxRow",
    "LagSummary",
    "MemoryDatabase",
    "MemoryStore",
    "Message",
    "MessageUpdate",
    "NewInbound",
    "Outcome",
    "PhoneConversations",
    "PoolUsage",
    "Refusal",
    "Reservation",
    "ReservationResult",
    "StatusResult",
    "StatusUpdate",
    "Store",
    "StoreSnapshot",
    "WebhookTx",
    "WorkerInfo",
    "migrate_database",
    "open_store",
    "schema_revision",
]


def _make_store(url: DatabaseUrl, pool_size: int, pooler: bool) -> SqlStore:
    if url.backend == "memory":
        raise ConfigError(f"no schema to migrate or read in {MEMORY_ONLY}")
    if url.backend == "sqlite":
        from dripline.store.sqlite import SqliteStore

        return SqliteStore(url, pool_size=pool_size)
    from dripline.store.postgres import PostgresStore

    return PostgresStore(url, pool_size=pool_size, pooler=pooler)


def _check_sqlite_directory(path: str) -> None:
    """Fail before the driver starts: aiosqlite leaves a thread behind when the file
    cannot be opened, which prints a traceback after a clean one-line error."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DatabaseUnavailable(
            f"cannot open SQLite database {path}: directory {folder} does not exist"
        )


def _unavailable(store: SqlStore, exc: BaseException) -> DatabaseUnavailable:
    kind = "SQLite database" if store.backend == "sqlite" else "PostgreSQL at"
    return DatabaseUnavailable(f"cannot open {kind} {store.target}: {first_line(exc)}")


async def _revision(conn: AsyncConnection) -> str | None:
    return await conn.run_sync(current_revision)


async def open_store(
    database_url: str,
    *,
    pool_size: int = 2,
    pooler: bool = False,
    auto_migrate: bool = True,
) -> Store:
    """Connect, check the schema (upgrading SQLite when `auto_migrate`) and return the store.

    Raises ConfigError for a malformed URL, DatabaseUnavailable when the database cannot
    be reached, StoreError when the schema is not at this version's head.
    """
    url = parse_database_url(database_url)
    if url.backend == "memory":
        return MemoryStore()  # a new, empty database each time
    if url.sqlite_path is not None:
        _check_sqlite_directory(url.sqlite_path)
    store = _make_store(url, pool_size, pooler)
    head = head_revision()
    try:
        try:
            if store.backend == "sqlite" and auto_migrate:
                # BEGIN IMMEDIATE: a second process opening the same new file waits,
                # then finds the schema at head and does nothing.
                async with store._engine.begin() as conn:
                    if await _revision(conn) != head:
                        await conn.run_sync(upgrade_connection)
                return store
            async with store._engine.connect() as conn:
                conn = await conn.execution_options(dripline_read=True)
                current = await _revision(conn)
        except DriplineError:
            raise
        except Exception as exc:
            raise _unavailable(store, exc) from exc
        if current != head:
            state = "has no dripline schema" if current is None else f"is at revision {current}"
            raise StoreError(
                f"database {store.target} {state}, this dripline needs {head}: "
                "run `dripline db upgrade`"
            )
        return store
    except BaseException:
        await store.close()
        raise


async def migrate_database(database_url: str, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the database's schema; returns (revision before, revision after)."""
    url = parse_database_url(database_url)
    store = _make_store(url, 1, False)
    try:
        async with store._engine.begin() as conn:
            before = await _revision(conn)
            await conn.run_sync(upgrade_connection, revision)
            after = await _revision(conn)
    except DriplineError:
        raise
    except Exception as exc:
        raise _unavailable(store, exc) from exc
    finally:
        await store.close()
    assert after is not None
    return before, after


async def schema_revision(database_url: str) -> tuple[str | None, str]:
    """(the database's revision or None, this dripline's head), without changing anything."""
    url = parse_database_url(database_url)
    store = _make_store(url, 1, False)
    try:
        async with store._engine.connect() as conn:
            conn = await conn.execution_options(dripline_read=True)
            current = await _revision(conn)
    except DriplineError:
        raise
    except Exception as exc:
        raise _unavailable(store, exc) from exc
    finally:
        await store.close()
    return current, head_revision()
