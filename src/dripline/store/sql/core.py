"""What every SQL query area shares: the engine, its transactions, error translation.

Every method of the SQL store is one transaction of a few set-based statements, never a
query per row: bulk inserts go through SQLAlchemy's multi-row `insertmanyvalues`, bulk
updates through `executemany` (SQLite) or one `UPDATE ... FROM unnest(...)`
(PostgreSQL, see `postgres.py`). Statements are built once per store so SQLAlchemy's
compiled cache hits. Driver errors become `DatabaseUnavailable` or `StoreError` here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dripline.errors import DatabaseUnavailable, StoreError, TransientStoreError
from dripline.store.schema import (
    ACTIVE_SQL,
    UTCDateTime,
    conversations,
    inbound_messages,
    messages,
)
from dripline.store.types import Conversation, Inbound, Message, WorkerInfo

__all__ = [
    "CHUNK",
    "CONVERSATION_COLUMNS",
    "INBOUND_COLUMNS",
    "INSERT_PAGE",
    "MESSAGE_COLUMNS",
    "SqlCore",
    "chunks",
    "conversation_from_row",
    "driver_error",
    "first_line",
    "inbound_from_row",
    "lock_conversations",
    "message_from_row",
    "ts",
    "worker_from_row",
]

T = TypeVar("T")

# PostgreSQL: deadlock_detected, serialization_failure, query_canceled (a statement
# timeout) and lock_not_available (a lock timeout): the same call may succeed later.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "57014", "55P03"})
# admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# asyncpg's errors for a connection whose protocol state was broken mid-operation.
_BROKEN_CONNECTION_ERRORS = frozenset(
    {"InternalClientError", "ConnectionDoesNotExistError", "InterfaceError"}
)

# Literal, like ACTIVE_SQL: a bound IN list would hide the partial index from planners.
ACTIVE = text(ACTIVE_SQL)
# Keys per `IN (...)` list: well under SQLite's and asyncpg's 32,766-parameter limits.
CHUNK = 5_000
# Rows per multi-row INSERT: 2,000 x 13 columns stays under those limits too.
INSERT_PAGE = 2_000


# Every column, in table order: the rows' types take them positionally.
CONVERSATION_COLUMNS = tuple(conversations.c)
MESSAGE_COLUMNS = tuple(messages.c)
INBOUND_COLUMNS = tuple(inbound_messages.c)
_FIELDS = [c.name for c in CONVERSATION_COLUMNS].index("fields")


def conversation_from_row(r: Any) -> Conversation:
    """A row of CONVERSATION_COLUMNS (JSON `fields` NULL becomes {})."""
    values = list(r)
    values[_FIELDS] = values[_FIELDS] or {}
    return Conversation(*values)


def message_from_row(r: Any) -> Message:
    """A row of MESSAGE_COLUMNS."""
    return Message(*r)


def inbound_from_row(r: Any) -> Inbound:
    """A row of INBOUND_COLUMNS, by column name: columns added by later migrations (the
    typed answer, 0005) need not be in `Inbound`'s field order."""
    return Inbound(**r._mapping)


def worker_from_row(r: Any) -> WorkerInfo:
    """A row of the workers table."""
    return WorkerInfo(
        id=r.id,
        hostname=r.hostname,
        pid=r.pid,
        started_at=r.started_at,
        heartbeat_at=r.heartbeat_at,
        rate_per_s=float(r.rate_per_s),
        concurrency=int(r.concurrency),
        policy=r.policy,
        stats=r.stats or {},
    )


def ts(name: str) -> Any:
    """A bound timestamp parameter (aware UTC in, aware UTC out)."""
    return bindparam(name, type_=UTCDateTime)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def lock_conversations(conn: AsyncConnection, ids: Sequence[int]) -> set[int]:
    """PostgreSQL: lock these conversation rows until commit, in id order, skipping those
    another transaction holds (waiting could deadlock against a dispatcher); returns the
    ids locked. A row gone is not returned either."""
    locked: set[int] = set()
    for id_chunk in chunks(sorted(ids)):
        rows = await conn.execute(
            select(conversations.c.id)
            .where(conversations.c.id.in_(list(id_chunk)))
            .order_by(conversations.c.id)
            .with_for_update(skip_locked=True)
        )
        locked.update(r.id for r in rows)
    return locked


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, short enough for a one-line error."""
    orig = getattr(exc, "orig", None) or exc
    text_ = str(orig).strip().splitlines()
    message = text_[0] if text_ else type(orig).__name__
    return message[:200]


def driver_error(
    target: str, exc: BaseException, orig: BaseException | None, *, invalidated: bool = False
) -> StoreError:
    """dripline's error for a driver's (`orig`: the driver's own exception, with its
    SQLSTATE), as SQLAlchemy's path and PostgreSQL's lane (`postgres_lane.py`) raise it."""
    state = str(getattr(orig, "sqlstate", "") or "")
    # A server shutting down, starting up or refusing connections, or a connection left
    # broken mid-operation by one: wait it out.
    if (
        state.startswith("08")
        or state in _UNAVAILABLE_SQLSTATES
        or invalidated
        or type(orig).__name__ in _BROKEN_CONNECTION_ERRORS
    ):
        return DatabaseUnavailable(f"database {target} is unavailable: {first_line(exc)}")
    # Deadlocks, serialization failures and timeouts: the database asks for a retry.
    if state in _RETRYABLE_SQLSTATES:
        return TransientStoreError(f"database {target}: {first_line(exc)}")
    return StoreError(f"database {target}: {first_line(exc)}")


class SqlCore:
    """The engine and its transactions; each query area (`dispatch`, `conversations`,
    `webhook`, `operator`) is a mixin over this, and `SqlStore` combines them."""

    backend: str

    def __init__(self, engine: AsyncEngine, target: str) -> None:
        self._engine = engine
        # Where the database is, for messages: a file path or host:port/db, no password.
        self.target = target

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Translate driver errors into dripline's, naming the database, never a secret."""
        try:
            yield
        except (DatabaseUnavailable, StoreError):
            raise
        except (sa_exc.OperationalError, sa_exc.InterfaceError, OSError, TimeoutError) as exc:
            raise DatabaseUnavailable(
                f"database {self.target} is unavailable: {first_line(exc)}"
            ) from exc
        except sa_exc.DBAPIError as exc:
            raise driver_error(
                self.target, exc, exc.orig, invalidated=exc.connection_invalidated
            ) from exc
        except sa_exc.SQLAlchemyError as exc:
            raise StoreError(f"database {self.target}: {first_line(exc)}") from exc

    def _upsert(self, table: Table) -> Any:
        """INSERT ... ON CONFLICT (id) DO UPDATE every other column (dialect-specific)."""
        raise NotImplementedError

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE)."""
        async with self._errors(), self._engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """One read-only transaction (SQLite: a deferred BEGIN, no write lock)."""
        async with self._errors(), self._engine.connect() as conn:
            conn = await conn.execution_options(dripline_read=True)
            async with conn.begin():
                yield conn

    async def close(self) -> None:
        await self._engine.dispose()

    async def _after_enroll(self, conn: AsyncConnection, earliest: datetime) -> None:
        """Hook inside a transaction that made work due (PostgreSQL: NOTIFY)."""

    def _after_enroll_commit(self) -> None:
        """Hook after that transaction's commit (SQLite: set in-process wake-up events)."""
