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
order. A call cancelled before the thread takes it is skipped; one cancelled while its
function runs still finishes (or rolls back) on the thread, as aiosqlite's would. Driver
errors become dripline's, as `SqlCore._errors` makes them: a locked or unreachable file
is `DatabaseUnavailable`, the rest `StoreError`.

The thread and its queue are written here rather than a `ThreadPoolExecutor`'s: a
trip through `run_in_executor` (a concurrent future, its lock and condition, the
chaining to an asyncio future) cost 36-45 us of CPU, this one 20 us (measured alone,
5,000 trips of an empty call); a trickle message takes three or four trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from dripline.errors import DatabaseUnavailable, StoreError
from dripline.store.sql.core import first_line

__all__ = ["SqliteLane"]

T = TypeVar("T")

# A call for the thread: the work, the future awaiting it, and that future's loop.
_Call = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(waiter: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: hand the thread's answer to its caller (unless it was cancelled)."""
    if waiter.done():
        return
    if error is None:
        waiter.set_result(result)
    else:
        waiter.set_exception(error)


class SqliteLane:
    """One thread, one connection, one transaction per `write` (or `read`) call."""

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
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def in_use(self) -> bool:
        """True once a call started the thread (a dispatcher's process), until `close`:
        reads that may go either way take the lane only then, so a process that never
        dispatches (`serve`, `status`) starts no thread and opens no connection for it."""
        return self._thread is not None

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(conn)` inside BEGIN IMMEDIATE ... COMMIT (rolled back if it raises)."""
        return await self._run(lambda: self._transaction(work))

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(conn)` outside any explicit transaction: for one SELECT, which SQLite
        runs as its own read transaction (no write lock, unlike `write`)."""
        return await self._run(lambda: work(self._connection()))

    async def _run(self, fn: Callable[[], T]) -> T:
        """`fn()` on the thread, its SQLite errors as the store's typed errors."""
        try:
            result: T = await self._call(fn)
            return result
        except sqlite3.OperationalError as exc:
            raise DatabaseUnavailable(
                f"database {self._target} is unavailable: {first_line(exc)}"
            ) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"database {self._target}: {first_line(exc)}") from exc

    def _call(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Queue `fn` for the thread (started by the first call)."""
        if self._thread is None:
            # A daemon: a store left open must not keep the process from exiting (a
            # transaction cut off at exit is rolled back by SQLite, as after a crash).
            self._thread = threading.Thread(target=self._serve, name="dripline-sqlite", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._calls.put((fn, waiter, loop))
        return waiter

    def _serve(self) -> None:
        """The thread: run each call in turn, answer on its loop."""
        while (call := self._calls.get()) is not None:
            fn, waiter, loop = call
            if waiter.cancelled():
                continue  # given up before it started: skipped
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # the caller gets it, whatever it is
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(_settle, waiter, result, error)

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
        if self._thread is None:
            return
        await self._call(self._close)
        self._calls.put(None)  # the thread ends after the calls before this one
        self._thread = None
