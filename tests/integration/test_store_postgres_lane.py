"""PostgreSQL's lane (store/postgres_lane.py): the dispatcher's claim, reservation, record
and lease extension on a connection of their own. Its loss, a call cancelled mid-way,
and an answer lost after the commit lose and double nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from dripline.errors import DatabaseUnavailable
from dripline.fake import FakeConfig, running_fake
from dripline.store import Enrollment, Reservation, Store, open_store
from tests.fixtures.dispatch import (
    TOKEN,
    UNUSED_URL,
    conversation_rows,
    enroll,
    fast_settings,
    message_rows,
    phones,
    received,
    run_until_sent,
)

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _terminate(url: str, pid: int) -> bool:
    """End a server session from outside, as a server restart or a proxy would (False:
    it had ended already)."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        return bool(await conn.fetchval("SELECT pg_terminate_backend($1, 5000)", pid))
    finally:
        await conn.close()


async def _lane_pid(store: Store) -> int:
    pid: int = await store._lane.run(lambda c: c.fetchval("SELECT pg_backend_pid()"))  # type: ignore[attr-defined]
    return pid


async def test_a_lost_lane_connection_fails_one_call_then_is_replaced(postgres_url: str) -> None:
    store = await open_store(postgres_url, pool_size=1)
    try:
        await store.enroll([Enrollment(f"+1415555{i:04d}", "f", at=NOW) for i in range(3)], NOW)
        before = await _lane_pid(store)
        assert await _terminate(postgres_url, before)
        with pytest.raises(DatabaseUnavailable, match="unavailable"):
            await store.claim_next(10, 60, "w", NOW)
        # The failed claim wrote nothing; the next call connects afresh.
        claim = await store.claim_next(10, 60, "w", NOW)
        assert len(claim.conversations) == 3
        assert await _lane_pid(store) != before
    finally:
        await store.close()


async def test_the_live_workers_are_read_on_the_lane_as_sqlalchemy_reads_them(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy dispatcher reads the live workers every 0.1 s (control.py): on the lane,
    not through SQLAlchemy; the same workers, in id order."""
    from dripline.store.postgres import PostgresStore
    from dripline.store.sql import SqlStore
    from dripline.store.types import WorkerInfo

    store = await open_store(postgres_url, pool_size=1)
    assert isinstance(store, PostgresStore)
    try:
        stats = {"beats": 3, "senders": {"1": {"rate": 80.0}}}
        for wid, age in (("c", 1), ("a", 3), ("old", 30)):
            at = NOW - timedelta(seconds=age)
            await store.heartbeat(WorkerInfo(wid, "h", 1, at, at, 40.0, 8, "static", stats), 10)
        through_pool = await SqlStore.live_workers(store, NOW, live_after_s=10)
        assert [w.id for w in through_pool] == ["a", "c"] and through_pool[0].stats == stats

        async def pool_read(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("read through SQLAlchemy")

        monkeypatch.setattr(SqlStore, "live_workers", pool_read)
        assert await store.live_workers(NOW, live_after_s=10) == through_pool
        assert [w.id for w in await store.live_workers(NOW, live_after_s=60)] == ["a", "c", "old"]
        # A process that never dispatched (`serve`, `status`) reads through the pool:
        # no lane thread or connection for it.
        other = await open_store(postgres_url, pool_size=1)
        try:
            with pytest.raises(AssertionError, match="through SQLAlchemy"):
                await other.live_workers(NOW, live_after_s=10)
            assert not other._lane.in_use  # type: ignore[attr-defined]
        finally:
            await other.close()
    finally:
        await store.close()


async def test_a_cancelled_call_still_finishes_before_the_next(postgres_url: str) -> None:
    """The caller of a reservation gives up while it waits on a row lock: the
    reservation still commits (the connection is never left mid-transaction), and a
    retry with the same `now` finds it, still this worker's to send."""
    store = await open_store(postgres_url, pool_size=1)
    blocker = await asyncpg.connect(_dsn(postgres_url))
    try:
        await store.enroll([Enrollment("+14155550100", "f", at=NOW)], NOW)
        [conv] = (await store.claim_next(1, 60, "w", NOW)).conversations
        item = Reservation(conv.id, conv.step, conv.purpose, NOW)
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", conv.id)
        at = NOW + timedelta(seconds=1)
        task = asyncio.ensure_future(store.reserve([item], "w", at))
        lane_pid = await _wait_for_lock_wait(blocker)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await blocker.execute("ROLLBACK")
        [again] = await store.reserve([item], "w", at)
        assert (again.ok, again.prior_status, again.attempts) == (True, "sending", 1)
        assert await _lane_pid(store) == lane_pid  # the same connection, still usable
        assert [(m.status, m.attempts) for m in await message_rows(store)] == [("sending", 1)]
    finally:
        await blocker.close()
        await store.close()


async def _wait_for_lock_wait(observer: asyncpg.Connection) -> int:
    """The pid of the session that waits on a row lock (the lane's)."""
    for _ in range(200):
        pid = await observer.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.02)
    raise AssertionError("the reservation never waited on the lock")


class _LaneFaults:
    """Every 5th hot call finds its connection ended by the server; every 7th
    reservation or record commits, then its answer is lost with the connection."""

    def __init__(self, store: Store, url: str) -> None:
        self.lane: Any = store._lane  # type: ignore[attr-defined]
        self.url = url
        self.real = self.lane.run
        self.calls = 0
        self.ended = 0
        self.lost = 0
        self.lane.run = self.run

    async def run(self, work: Callable[[Any], Awaitable[Any]], *, transaction: bool = False) -> Any:
        self.calls += 1
        conn = self.lane._conn
        if self.calls % 5 == 0 and conn is not None and not conn.is_closed():
            self.ended += await _terminate(self.url, conn.get_server_pid())
        result = await self.real(work, transaction=transaction)
        # A claim's lost answer leaves its rows leased to this worker until the lease
        # runs out (30 s here): safe, but slow for a test.
        if self.calls % 7 == 0 and "claim_next" not in work.__qualname__:
            self.lost += 1
            self.lane._drop()
            raise DatabaseUnavailable("the answer was lost with the connection")
        return result


async def test_lane_connections_lost_mid_run_lose_and_double_nothing(postgres_url: str) -> None:
    store = await open_store(postgres_url, pool_size=1)
    faults = _LaneFaults(store, postgres_url)
    try:
        numbers = phones(300)
        await enroll(store, numbers)
        config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0, latency_ms=5)
        settings = fast_settings(UNUSED_URL, rate_per_s=500, concurrency=20, batch_limit=50)
        async with running_fake(config) as fake:
            summary = await run_until_sent(store, fake, settings, len(numbers))
            got = received(fake)
        assert faults.ended > 0 and faults.lost > 0, (faults.ended, faults.lost)
        assert got == Counter({p: 1 for p in numbers})
        assert summary.stats.sent == len(numbers)
        rows = await message_rows(store)
        assert len(rows) == len(numbers)
        assert {r.status for r in rows} == {"sent"}
        convs = await conversation_rows(store)
        assert {(c.state, c.step) for c in convs} == {("in_progress", 1)}
        assert all(c.lease_owner is None for c in convs)
    finally:
        await store.close()


async def test_a_new_lane_connection_asks_the_server_about_array_types_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg asks the server for every array type it has no codec for (three round
    trips, the catalog query the dearest on a new session), once per statement bringing
    one: a first reservation and record asked four times, three before a `run --once`
    could send (issue 14, start-up). The lane learns them all as it connects."""
    asked: list[set[int]] = []
    introspect = asyncpg.Connection._introspect_types

    async def counted(self: Any, typeoids: Any, timeout: Any) -> Any:
        asked.append(set(typeoids))
        return await introspect(self, typeoids, timeout)

    monkeypatch.setattr(asyncpg.Connection, "_introspect_types", counted)
    store = await open_store(postgres_url, pool_size=1)
    try:
        await enroll(store, phones(2))
        config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0)
        async with running_fake(config) as fake:
            summary = await run_until_sent(store, fake, fast_settings(UNUSED_URL), 2)
        assert summary.stats.sent == 2
        assert {r.status for r in await message_rows(store)} == {"sent"}
    finally:
        await store.close()
    # The lane's one connection asked once; the store's pool (SQLAlchemy's own
    # statements) may ask for its own, none of them arrays of the hot path.
    lane = [oids for oids in asked if oids & {1016, 1007, 1185, 1015, 1022}]
    assert len(lane) == 1, asked


async def test_a_dispatcher_opens_no_pool_connection_before_its_first_send(
    postgres_url: str,
) -> None:
    """`open_store(..., dispatcher=True)` reads the schema's revision on the lane, where a
    dispatcher's first statements go: the pool's connection (SQLAlchemy's, with four
    more round trips as it opens) waited before `run --once`'s first send (issue 14,
    start-up). It opens when something first needs it."""
    store = await open_store(postgres_url, pool_size=1, dispatcher=True)
    try:
        assert store._engine.pool.checkedin() == 0  # type: ignore[attr-defined]
        await store.enroll([Enrollment("+14155550001", "f", at=NOW)], NOW)
        claim = await store.claim_next(10, 60, "w", NOW)
        assert len(claim.conversations) == 1
        assert store._engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    finally:
        await store.close()
