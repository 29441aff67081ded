"""SQLite: a whole transaction in one trip to a thread of its own, in driver SQL (the
dispatcher's hot path, issue 14).

Through SQLAlchemy's asyncio layer every driver call (cursor, execute, fetch, close,
BEGIN, COMMIT, the pool's reset) is its own round trip to aiosqlite's thread: nine for a
one-statement transaction, each a future, a thread hand-off and an event-loop wake-up,
plus SQLAlchemy's per-statement work. Measured alone, a claim and its next-due query
cost 1.6 ms of CPU that way, 0.6 ms as one SQLAlchemy transaction on a thread, and
0.06 ms in driver SQL; the hand-off to a thread is 0.04 ms. At a trickle (one message
per wake-up) that overhead was most of the dispatcher's CPU per message.

A lane has its own connection, with the same pragmas as the pool's: to SQLite it is one
more writer, serialized with the others (this process's pool, other processes) by BEGIN
IMMEDIATE and the busy timeout, as before. Calls queue on the one thread in arrival
order. A call cancelled while its function runs still finishes (or rolls back) on the
thread, as aiosqlite's would. Driver errors become dripline's, as `SqlCore._errors`
makes them: a locked or unreachable file is `DatabaseUnavailable`, the rest `StoreError`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dripline.errors import DatabaseUnavailable, StoreError
from dripline.store.sql.core import first_line

__all__ = ["SqliteLane"]

T = TypeVar("T")


class SqliteLane:
    """One thread, one connection, one transaction per `write` call."""

    def __init__(
        self,
        path: str,
        *,
        target: str,
        busy_timeout_s: float,
        on_connect: Callable[[Any, Any], None],
    ) -> None:
        # Nothing connects or starts a thread until the first call.
        self._path = path
        self._target = target
        self._busy_timeout_s = busy_timeout_s
        self._on_connect = on_connect
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dripline-sqlite")

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(conn)` inside BEGIN IMMEDIATE ... COMMIT (rolled back if it raises)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._transaction, work)
        except sqlite3.OperationalError as exc:
            raise DatabaseUnavailable(
                f"database {self._target} is unavailable: {first_line(exc)}"
            ) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"database {self._target}: {first_line(exc)}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_s,
                isolation_level=None,  # no implicit BEGIN: _transaction says when
                check_same_thread=False,
            )
            self._on_connect(conn, None)  # the pool's pragmas
            self._conn = conn
        return self._conn

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)
