"""PostgreSQL: the dispatcher's hot calls on an asyncpg connection of their own, with
prepared statements and no SQLAlchemy (issue 14).

Through SQLAlchemy's asyncio layer each statement cost the dispatcher 1.2-1.8 ms of CPU
(pool checkout and reset, greenlet hand-offs, result processing; bench/README.md), per
statement rather than per transaction; at a trickle that was most of a message's CPU.
Here a call is asyncpg's own: a cached prepared statement is one Bind/Execute round
trip.

Calls take turns on the one connection, in arrival order: one task of the lane's runs
them, and each caller waits on a future. A call cancelled while it runs still finishes
(or rolls back) on the connection, as SQLite's lane does, so the next call never finds
it mid-statement; one cancelled before it started never runs. (A task per call,
shielded, did the same for about 50 us more CPU per call, measured alone: a trickle
message makes four or five calls.) The connection opens on first use; after a
driver or network error that can have left it broken it is dropped, the call fails
with `DatabaseUnavailable` (the dispatcher retries, as it does for the pool's), and the
next call connects afresh.

Sessions plan every statement for its own parameters (`plan_cache_mode =
force_custom_plan`, see `postgres.py`). Behind a transaction pooler (`pooler=True`) a
statement prepared in one transaction may be missing from, or collide with another
client's in, the next server session: there the lane prepares nothing by name
(`statement_cache_size=0`: asyncpg's unnamed statement, parsed afresh each time, so also
planned for its parameters) and runs every call inside a transaction, so the parse and
the execution reach the same server session. No setting is sent there: PgBouncer
refuses startup parameters it does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from dripline.errors import DatabaseUnavailable, StoreError
from dripline.store.sql.core import driver_error, first_line

__all__ = ["PostgresLane"]

T = TypeVar("T")

_CLOSE_TIMEOUT_S = 2.0
# How long `close` waits for the calls queued before it (a call on a connection the
# network silently dropped could otherwise wait for TCP to give up).
_CLOSE_WAIT_S = 10.0
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
# Every array type the hot statements bind or return (postgres_hot.py), but `text[]`,
# which asyncpg knows without asking.
_ARRAY_TYPES = "SELECT $1::bigint[], $2::integer[], $3::varchar[], $4::timestamptz[], $5::float8[]"


class PostgresLane:
    """One asyncpg connection; one call at a time, each whole."""

    def __init__(self, dsn: str, *, target: str, pooler: bool) -> None:
        self._dsn = dsn
        self._target = target
        self._pooler = pooler
        self._conn: Any = None
        # (work, in a transaction, the caller's future); work None: `close`.
        self._calls: deque[tuple[Callable[[Any], Awaitable[Any]] | None, bool, asyncio.Future[Any]]]
        self._calls = deque()
        self._ready = asyncio.Event()
        self._server: asyncio.Task[None] | None = None

    @property
    def in_use(self) -> bool:
        """True once a call started the lane (a dispatcher's process), and until it
        closes: reads that may go either way take the lane only then, so a process
        that never dispatches (`serve`, `status`) holds no connection for it."""
        return self._server is not None and not self._server.done()

    async def run(self, work: Callable[[Any], Awaitable[T]], *, transaction: bool = False) -> T:
        """`work(conn)`; in one transaction if `transaction` (always behind a pooler),
        else autocommitted statement by statement (a one-statement `work` is atomic)."""
        loop = asyncio.get_running_loop()
        server = self._server
        if server is None or server.done() or server.get_loop() is not loop:
            if server is not None and server.get_loop() is not loop:
                # A store used again from another event loop: the old connection and
                # waiters belong to the old one.
                self._conn = None
                self._calls.clear()
                self._ready = asyncio.Event()
            self._server = loop.create_task(self._serve(), name="dripline-pg-lane")
        done: asyncio.Future[T] = loop.create_future()
        self._calls.append((work, transaction or self._pooler, done))
        self._ready.set()
        return await done

    async def _serve(self) -> None:
        calls = self._calls
        while True:
            while not calls:
                self._ready.clear()
                await self._ready.wait()
            work, transaction, done = calls.popleft()
            if work is None:
                # `close`: the calls queued before it are done.
                await self._close_connection()
                if not done.done():
                    done.set_result(None)
                if not calls:
                    return
                continue
            if done.done():
                continue  # its caller gave up before it started
            try:
                result = await self._call(work, transaction)
            except asyncio.CancelledError:
                done.cancel()
                raise
            except BaseException as exc:
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(result)

    async def _call(self, work: Callable[[Any], Awaitable[T]], transaction: bool) -> T:
        conn = self._conn
        try:
            if conn is None:
                conn = self._conn = await self._connect()
            if not transaction:
                return await work(conn)
            async with conn.transaction():
                return await work(conn)
        except BaseException as exc:
            error = self._translate(exc)
            if error is None or isinstance(error, DatabaseUnavailable):
                # Cancelled, or a connection that may be broken: never reuse it.
                self._drop()
            if error is None:
                raise
            raise error from exc

    async def _connect(self) -> Any:
        if self._pooler:
            return await asyncpg.connect(self._dsn, statement_cache_size=0)
        conn = await asyncpg.connect(
            self._dsn, server_settings={"plan_cache_mode": "force_custom_plan"}
        )
        try:
            # asyncpg has no codec for most array types until it asks the server
            # (`_introspect_types`: three round trips, the catalog query the dearest on
            # a new session's cold caches), and it asks once per statement that brings a
            # new one: the reservation's lock, prior-rows read and insert and the record
            # each did, three of them before a `run --once` could send (issue 14).
            # One statement naming them all asks once. (Not behind a pooler: a named
            # statement there could meet another client's of the same name.)
            await conn.prepare(_ARRAY_TYPES)
        except BaseException:
            conn.terminate()
            raise
        return conn

    def _translate(self, exc: BaseException) -> StoreError | None:
        """dripline's error for `exc` (None: not a database error, re-raise it)."""
        if isinstance(exc, (OSError, TimeoutError)):
            return DatabaseUnavailable(f"database {self._target} is unavailable: {first_line(exc)}")
        # InternalClientError: e.g. a statement started while the protocol still
        # consumed the FATAL a server sends as it ends the session (seen with
        # pg_terminate_backend): the connection is as good as lost.
        if isinstance(exc, _DRIVER_ERRORS):
            error = driver_error(self._target, exc, exc)
            if self._conn is not None and self._conn.is_closed():
                return DatabaseUnavailable(str(error))
            return error
        return None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=_CLOSE_TIMEOUT_S)
            except Exception:
                conn.terminate()

    async def close(self) -> None:
        """Waits for the calls queued before it (up to _CLOSE_WAIT_S), then closes the
        connection (a later call would open another, as SQLAlchemy's engine does after
        `dispose`)."""
        server = self._server
        loop = asyncio.get_running_loop()
        if server is None or server.done() or server.get_loop() is not loop:
            self._drop()
            return
        done: asyncio.Future[Any] = loop.create_future()
        self._calls.append((None, False, done))
        self._ready.set()
        try:
            await asyncio.wait_for(done, _CLOSE_WAIT_S)
        except TimeoutError:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
            self._drop()
