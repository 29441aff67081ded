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
from typing import TYPE_CHECKING, Any

# Before anything imports SQLAlchemy's asyncio package: it then loads without the ORM.
import dripline.store.sa_asyncio  # noqa: F401

# isort: split
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from dripline.errors import ConfigError, DatabaseUnavailable, DriplineError, StoreError
from dripline.store.base import Store, WebhookTx
from dripline.store.migrate import current_revision, head_revision, upgrade_connection
from dripline.store.results_types import AnswerCount, FlowResultsData, StepCounts
from dripline.store.sql import SqlStore, first_line
from dripline.store.types import (
    ACTIVE_STATES,
    CANCELLED,
    CONVERSATION_STATES,
    LEASE_LOST,
    OPT_OUT_KIND,
    STATUS_RANK,
    THROUGHPUT_WINDOWS_S,
    Conversation,
    ConversationUpdate,
    Enrollment,
    EnrollResult,
    Inbound,
    InboxEntry,
    Message,
    MessageUpdate,
    Outcome,
    Reservation,
    ReservationResult,
    Suppression,
    WorkerInfo,
)
from dripline.store.urls import MEMORY_ONLY, DatabaseUrl, parse_database_url

if TYPE_CHECKING:
    from dripline.store.memory import MemoryDatabase, MemoryStore
    from dripline.store.report_types import (
        BacklogCounts,
        BacklogSnapshot,
        ErrorCount,
        ForgetResult,
        ImportedConversation,
        InboxBacklog,
        LagSummary,
        NewWebhookError,
        PoolUsage,
        PruneResult,
        StoreHealth,
        StoreSnapshot,
        WebhookErrorCount,
    )
    from dripline.store.webhook_types import (
        CancelOutcome,
        ConversationChange,
        InboxRow,
        NewInbound,
        PhoneConversations,
        Refusal,
        StatusResult,
        StatusUpdate,
    )

__all__ = [
    "ACTIVE_STATES",
    "CANCELLED",
    "CONVERSATION_STATES",
    "LEASE_LOST",
    "OPT_OUT_KIND",
    "STATUS_RANK",
    "THROUGHPUT_WINDOWS_S",
    "AnswerCount",
    "BacklogCounts",
    "BacklogSnapshot",
    "CancelOutcome",
    "Conversation",
    "ConversationChange",
    "ConversationUpdate",
    "EnrollResult",
    "Enrollment",
    "ErrorCount",
    "FlowResultsData",
    "ForgetResult",
    "ImportedConversation",
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
    "NewWebhookError",
    "Outcome",
    "PhoneConversations",
    "PoolUsage",
    "PruneResult",
    "Refusal",
    "Reservation",
    "ReservationResult",
    "StatusResult",
    "StatusUpdate",
    "StepCounts",
    "Store",
    "StoreHealth",
    "StoreSnapshot",
    "Suppression",
    "WebhookErrorCount",
    "WebhookTx",
    "WorkerInfo",
    "migrate_database",
    "open_store",
    "schema_revision",
]


# The operators' read models (`report_types`), loaded on first use like the memory store.
_REPORT_TYPES = frozenset(
    (
        "BacklogCounts",
        "BacklogSnapshot",
        "ErrorCount",
        "ForgetResult",
        "ImportedConversation",
        "InboxBacklog",
        "LagSummary",
        "NewWebhookError",
        "PoolUsage",
        "PruneResult",
        "StoreHealth",
        "StoreSnapshot",
        "WebhookErrorCount",
    )
)

# The webhook processor's and the API's types (`webhook_types`), the same way.
_WEBHOOK_TYPES = frozenset(
    (
        "CancelOutcome",
        "ConversationChange",
        "InboxRow",
        "NewInbound",
        "PhoneConversations",
        "Refusal",
        "StatusResult",
        "StatusUpdate",
    )
)


def __getattr__(name: str) -> Any:
    # The in-memory backend (tests, the simulator) is loaded on first use: a dispatcher
    # on SQLite or PostgreSQL never needs it, and `run --once` pays every import. Nor
    # does it need the operators' read models or the webhook's types (dataclasses to build).
    if name in ("MemoryDatabase", "MemoryStore"):
        from dripline.store import memory

        return getattr(memory, name)
    if name in _REPORT_TYPES:
        from dripline.store import report_types

        return getattr(report_types, name)
    if name in _WEBHOOK_TYPES:
        from dripline.store import webhook_types

        return getattr(webhook_types, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _create_private(path: str) -> None:
    """Create a missing SQLite file readable by its owner only (0600): it holds phone
    numbers and messages. SQLite gives its -wal and -shm files the same mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create SQLite database {path}: {exc.strerror}") from None


def _unavailable(store: SqlStore, exc: BaseException) -> DatabaseUnavailable:
    kind = "SQLite database" if store.backend == "sqlite" else "PostgreSQL at"
    return DatabaseUnavailable(f"cannot open {kind} {store.target}: {first_line(exc)}")


async def _revision(conn: AsyncConnection) -> str | None:
    return await conn.run_sync(current_revision)


_UNREAD = object()  # the revision is still to be read through the pool


async def _lane_revision(store: SqlStore) -> object:
    """The revision as the dispatcher's lane reads it. On SQLite a failure there leaves
    it to the pool's open, which fails as `open_store` always has (and migrates a new
    file); on PostgreSQL an unreachable server is said as the pool's open says it."""
    try:
        return await store.lane_revision()
    except StoreError as exc:
        if store.backend == "sqlite":
            return _UNREAD
        if isinstance(exc, DatabaseUnavailable):
            raise _unavailable(store, exc.__cause__ or exc) from exc
        raise


async def open_store(
    database_url: str,
    *,
    pool_size: int = 2,
    pooler: bool = False,
    auto_migrate: bool = True,
    dispatcher: bool = False,
) -> Store:
    """Connect, check the schema (upgrading SQLite when `auto_migrate`) and return the store.

    `dispatcher`: the caller dispatches next; the schema is then read on the
    dispatcher's own connection (`lane_revision`), and the pool connects when first
    used (a `run --once` that sends and stops uses none).

    Raises ConfigError for a malformed URL, DatabaseUnavailable when the database cannot
    be reached, StoreError when the schema is not at this version's head.
    """
    url = parse_database_url(database_url)
    if url.backend == "memory":
        from dripline.store.memory import MemoryStore

        return MemoryStore()  # a new, empty database each time
    if url.sqlite_path is not None:
        _check_sqlite_directory(url.sqlite_path)
        if auto_migrate:
            _create_private(url.sqlite_path)
    store = _make_store(url, pool_size, pooler)
    head = head_revision()
    try:
        try:
            # A dispatcher's first statements go to its own connection (the lane): the
            # revision is read there, and the pool connects when first needed (for `run
            # --once`, not at all). Issue 14, start-up.
            current: object = await _lane_revision(store) if dispatcher else _UNREAD
            if store.backend == "sqlite" and auto_migrate:
                if current == head:
                    return store
                # BEGIN IMMEDIATE: a second process opening the same new file waits,
                # then finds the schema at head and does nothing.
                async with store._engine.begin() as conn:
                    if await _revision(conn) != head:
                        await conn.run_sync(upgrade_connection)
                return store
            if current is _UNREAD:
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


# `pg_advisory_xact_lock` key ("drip"): one migration at a time per database.
MIGRATION_LOCK_KEY = 0x64726970
_MIGRATION_LOCK = text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")


async def migrate_database(
    database_url: str, revision: str = "head", *, pooler: bool = False
) -> tuple[str | None, str]:
    """Upgrade the database's schema; returns (revision before, revision after).

    Safe to run from several processes at once (every replica's start command, a
    pre-deploy step racing a manual one): on PostgreSQL the migration holds a
    transaction-scoped advisory lock, so the others wait, then find the schema at
    `revision` and do nothing. `pooler`: behind a transaction-mode pooler, as in
    `open_store` (the lock and the DDL share the one transaction, so that works).
    """
    url = parse_database_url(database_url)
    if url.sqlite_path is not None:
        _check_sqlite_directory(url.sqlite_path)
        _create_private(url.sqlite_path)
    store = _make_store(url, 1, pooler)
    try:
        async with store._engine.begin() as conn:
            if store.backend == "postgresql":
                await conn.execute(_MIGRATION_LOCK)
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


async def schema_revision(database_url: str, *, pooler: bool = False) -> tuple[str | None, str]:
    """(the database's revision or None, this dripline's head), without changing anything."""
    url = parse_database_url(database_url)
    store = _make_store(url, 1, pooler)
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
