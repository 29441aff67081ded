"""The dispatcher's waits (`Context.sleep`, `wake.Flag`, the recorder's timer) on a
virtual-time loop: what wakes a sleep, what a cancelled one leaves behind, and how
many tasks a trickle costs per message (issue 14, item 2)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from dripline.dispatcher.constants import RECORD_BATCH_MAX, RECORD_INTERVAL_S
from dripline.dispatcher.context import Context
from dripline.dispatcher.engine import Dispatcher
from dripline.dispatcher.outcomes import unchanged
from dripline.dispatcher.recorder import Recorder
from dripline.dispatcher.stats import DispatchStats
from dripline.flows import load_flows
from dripline.settings import Policy
from dripline.sim.loop import SimClock, VirtualTimeLoop, run_virtual
from dripline.store.base import Conversation, Enrollment, Outcome
from dripline.store.memory import MemoryStore
from dripline.wake import Flag
from tests.fixtures.dispatch import UNUSED_URL, fast_settings, phones


def _context(loop: VirtualTimeLoop, store: MemoryStore | None = None) -> Context:
    stats = DispatchStats()
    return Context(
        store=store or MemoryStore(),
        flows=load_flows(None),
        settings=fast_settings(UNUSED_URL),
        clock=SimClock(loop),
        observer=stats,
        stats=stats,
        rng=random.Random(1),
        worker_id="w1",
        policy=Policy.STATIC,
        batch_limit=10,
        concurrency=10,
        rate_share=10.0,
    )


def _tasks_started(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count every task created on `loop` from now on (in the returned list's [0])."""
    count = [0]

    def factory(lp: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        count[0] += 1
        return asyncio.Task(coro, loop=lp, **kw)

    loop.set_task_factory(factory)
    return count


def test_sleep_ends_at_its_timeout_or_at_the_first_flag_or_event_set() -> None:
    async def main(loop: VirtualTimeLoop) -> list[float]:
        ctx = _context(loop)
        flag, plain = Flag(), asyncio.Event()
        t0 = loop.time()
        ended = []
        await ctx.sleep(2.0, flag, plain)
        ended.append(loop.time() - t0)
        loop.call_later(0.5, flag.set)
        await ctx.sleep(2.0, flag, plain)
        ended.append(loop.time() - t0)
        loop.call_later(0.25, plain.set)  # an event that is not a Flag (a store's)
        await ctx.sleep(2.0, Flag(), plain)
        ended.append(loop.time() - t0)
        loop.call_later(1.0, ctx.signals.stop.set)  # stop always wakes a sleep
        await ctx.sleep(5.0)
        ended.append(loop.time() - t0)
        await ctx.sleep(5.0)  # stop is set: no wait at all
        ended.append(loop.time() - t0)
        return ended

    assert run_virtual(main) == pytest.approx([2.0, 2.5, 2.75, 3.75, 3.75])


def test_a_sleep_watches_flags_without_a_task() -> None:
    async def main(loop: VirtualTimeLoop) -> int:
        ctx = _context(loop)
        started = _tasks_started(loop)
        flag = ctx.signals.record
        for _ in range(10):
            flag.clear()
            loop.call_later(0.1, flag.set)
            await ctx.sleep(1.0, flag, ctx.signals.resched, ctx.signals.room)
        return started[0]

    assert run_virtual(main) == 0


def test_a_cancelled_sleep_leaves_no_watcher_and_no_timer() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[int, int, bool]:
        ctx = _context(loop)
        flag = Flag()
        timers = len(loop._scheduled)  # type: ignore[attr-defined]
        sleeper = asyncio.ensure_future(ctx.sleep(100.0, flag))
        await asyncio.sleep(0.1)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        watching = len(flag._watchers) + len(ctx.signals.stop._watchers)
        live = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        flag.set()  # nothing left to wake
        return watching, len(live) - timers, sleeper.cancelled()

    assert run_virtual(main) == (0, 0, True)


def test_a_sleep_ended_by_one_flag_stops_watching_the_others() -> None:
    async def main(loop: VirtualTimeLoop) -> int:
        ctx = _context(loop)
        a, b = Flag(), Flag()
        loop.call_later(0.1, a.set)
        await ctx.sleep(1.0, a, b)
        return len(b._watchers) + len(ctx.signals.stop._watchers)

    assert run_virtual(main) == 0


def _outcome(cid: int, clock: SimClock) -> tuple[Conversation, Outcome]:
    now = clock.now()
    conv = Conversation(
        id=cid,
        phone=f"+1555000{cid:04d}",
        flow="demo",
        step=0,
        purpose="question",
        state="pending",
        next_send_at=now,
        attempts=0,
        lease_owner="w1",
        lease_expires_at=now,
        last_inbound_at=None,
        last_error=None,
        name=None,
        timezone=None,
        sender=None,
        fields={},
        created_at=now,
        updated_at=now,
    )
    return conv, unchanged(conv)


class _CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[float, int]] = []

    async def record_results(self, outcomes: Any, worker_id: str, now: Any) -> int:
        self.batches.append((asyncio.get_running_loop().time(), len(outcomes)))
        return 0


def test_the_recorder_writes_a_batch_its_interval_after_the_first_outcome() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[tuple[float, int]], float]:
        store = _CountingStore()
        ctx = _context(loop, store)
        clock = SimClock(loop)
        recorder = Recorder(ctx)
        task = asyncio.ensure_future(recorder.run())
        t0 = loop.time()
        await asyncio.sleep(1.0)  # idle: nothing written
        recorder.finish(*_outcome(1, clock))
        await asyncio.sleep(RECORD_INTERVAL_S / 2)
        recorder.finish(*_outcome(2, clock))  # joins the first's batch
        await asyncio.sleep(1.0)
        for cid in range(3, 3 + RECORD_BATCH_MAX):  # a full batch goes at once
            recorder.finish(*_outcome(cid, clock))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        full_at = loop.time() - t0
        await asyncio.sleep(1.0)
        ctx.signals.stop.set()
        await task
        return [(round(t - t0, 6), n) for t, n in store.batches], full_at

    batches, full_at = run_virtual(main)
    assert batches == [(1.0 + RECORD_INTERVAL_S, 2), (full_at, RECORD_BATCH_MAX)]


def test_a_trickle_starts_about_one_task_per_message() -> None:
    """Before: every sleep started a task per event it watched (the idle claimer's three,
    the recorder's two, twice), 8 or more per message; now the send's own task."""
    n = 40
    run = _trickle(n, 0.1)
    assert run.sent == n
    assert run.tasks <= n * 1.5, run.tasks


def test_a_recorder_stopped_with_a_batch_pending_keeps_it_for_the_final_flush() -> None:
    """Stop before the batch's timer: the recorder returns at once, drops nothing, and
    the late timer wakes no one; the dispatcher's shutdown writes the batch."""

    async def main(loop: VirtualTimeLoop) -> tuple[list[tuple[float, int]], int]:
        store = _CountingStore()
        ctx = _context(loop, store)
        recorder = Recorder(ctx)
        task = asyncio.ensure_future(recorder.run())
        await asyncio.sleep(0.1)
        recorder.finish(*_outcome(1, SimClock(loop)))
        ctx.signals.stop.set()
        await task
        pending = recorder.pending
        await asyncio.sleep(RECORD_INTERVAL_S * 2)  # the batch's timer fires into nothing
        await recorder.flush()
        return [(round(t - 0.1, 6), n) for t, n in store.batches], pending

    batches, pending = run_virtual(main)
    assert pending == 1
    assert batches == [(RECORD_INTERVAL_S * 2, 1)]


def test_sends_waiting_for_their_tokens_wake_together_per_tick_never_early() -> None:
    """Forty sends 1 ms apart (1,000/s) wake in 5 ms ticks: one timer per tick, not per
    send, each at or after its token's time; a cancelled send's wait wakes no other."""
    from dripline.dispatcher.ticks import StartTicks

    async def main(loop: VirtualTimeLoop) -> tuple[int, list[float], bool]:
        ticks = StartTicks(0.005)
        base = loop.time() + 0.0102
        woke: list[float] = []

        async def send(at: float) -> None:
            await ticks.wait_until(at)
            woke.append(loop.time() - at)

        before = len(loop._scheduled)  # type: ignore[attr-defined]
        sends = [asyncio.ensure_future(send(base + i * 0.001)) for i in range(40)]
        await asyncio.sleep(0)
        timers = len(loop._scheduled) - before  # type: ignore[attr-defined]
        sends[7].cancel()  # shares its tick with sends 5-9
        await asyncio.gather(*sends, return_exceptions=True)
        return timers, woke, sends[7].cancelled()

    timers, late, cancelled = run_virtual(main)
    assert timers <= 9  # 40 tokens over 39 ms: 8 or 9 ticks of 5 ms, not 40 timers
    assert len(late) == 39 and cancelled
    assert all(-1e-9 <= d < 0.005 for d in late), late


@dataclass
class _Trickle:
    sent: int  # messages sent
    tasks: int  # tasks started while they were
    sleeps: dict[str, int]  # sleeps begun meanwhile, by task name


def _trickle(n: int, interval_s: float, store: MemoryStore | None = None) -> _Trickle:
    """A dispatcher sending `n` messages, one every `interval_s`, in virtual time."""

    async def main(loop: VirtualTimeLoop) -> _Trickle:
        clock = SimClock(loop)
        nonlocal store
        store = store or MemoryStore()
        t0 = clock.now()
        items = [
            Enrollment(phone=p, flow="demo", at=t0 + timedelta(seconds=1 + i * interval_s))
            for i, p in enumerate(phones(n))
        ]
        await store.enroll(items, clock.now())
        sent: list[str] = []

        class _Api:
            async def send(self, to: str, message: Any, **kw: Any) -> Any:
                await asyncio.sleep(0.01)
                sent.append(to)
                return type("R", (), {"wamid": f"wamid.{len(sent)}"})()

        sleeps: dict[str, int] = {}
        plain = Context.sleep

        async def counted(self: Context, seconds: float, *events: asyncio.Event) -> None:
            task = asyncio.current_task()
            name = task.get_name() if task is not None else "?"
            sleeps[name] = sleeps.get(name, 0) + 1
            await plain(self, seconds, *events)

        settings = fast_settings(UNUSED_URL, rate_per_s=100.0, heartbeat_s=2.0)
        d = Dispatcher(
            store=store,
            client=_Api(),
            flows=load_flows(None),
            settings=settings,
            clock=clock,
            worker_id="w1",
            rng=random.Random(1),
        )
        task = asyncio.ensure_future(d.run(max_seconds=60))
        await asyncio.sleep(0.5)  # started and idle
        started = _tasks_started(loop)
        Context.sleep = counted  # type: ignore[method-assign]
        try:
            await asyncio.sleep(1 + n * interval_s)
        finally:
            Context.sleep = plain  # type: ignore[method-assign]
        tasks = started[0]
        d.request_stop()
        await task
        return _Trickle(len(sent), tasks, sleeps)

    return run_virtual(main)


def test_the_heartbeat_sleeps_through_a_trickle() -> None:
    """Before: every claim queued a row and woke the heartbeat, which then looked again
    SHARE_LOOK_S later: 42 sleeps for 40 messages here. A queue the
    launcher empties at once is no backlog; the heartbeat beats every 2 s."""
    run = _trickle(40, 0.1)
    assert run.sent == 40
    beats = run.sleeps.get("dripline-heartbeat", 0)
    assert beats <= 2 + 5.0 / 2.0, run.sleeps


class _TripStore(MemoryStore):
    """Counts the transactions that write outcomes: alone, or with a claim."""

    def __init__(self) -> None:
        super().__init__()
        self.alone = 0
        self.riding = 0

    async def record_results(self, outcomes: Any, worker_id: str, now: Any) -> int:
        self.alone += 1
        return await super().record_results(outcomes, worker_id, now)

    async def record_and_claim(
        self, outcomes: Any, limit: int, lease_ttl_s: float, worker_id: str, now: Any
    ) -> Any:
        self.riding += 1 if outcomes else 0
        return await super().record_and_claim(outcomes, limit, lease_ttl_s, worker_id, now)


def test_outcomes_ride_with_the_next_claim_at_a_trickle() -> None:
    """Before: each outcome was a transaction of its own (40 for 40 messages here) a
    little before or after the next claim's. Now the recorder waits for the claim the
    idle claimer has planned within two record intervals, and the claim writes them;
    every conversation is still written once, with its send."""
    store = _TripStore()
    assert _trickle(40, 0.1, store).sent == 40
    assert store.riding >= 35 and store.alone <= 5, (store.riding, store.alone)
    done = [c for c in store.database.tables.conversations.values() if c.step == 1]
    assert len(done) == 40 and all(c.lease_owner is None for c in done)
