"""The dispatcher: claim due conversations, send at the API's speed, record outcomes.

Tasks, each in its own module, sharing one `Context` (`context.py`):

    claimer     claimer.py    claims the next batch before the queue runs dry (pipelined),
                              sleeps until the earliest due time, wakes on enrollment
    launcher    launcher.py   rate tokens and concurrency slots; reserves the messages
                              rows of a group in one transaction; starts the HTTP calls
    senders     send.py       one task per HTTP call; no database connection held
    recorder    recorder.py   writes outcomes in batches (one transaction per flush)
    heartbeat   control.py    workers split the global rate; queued leases kept alive
    controller  control.py    throttle recovery, adaptive concurrency, progress log

The decisions are pure and live apart: what a result does (`responses.py`, over
`reactions.react` and `reconcile.settle`), the per-number pacing (`pacing.py`), the
outage detector (`outage.py`), the breaker (`breaker.py`), the policies
(`policies.py`). This module wires them, runs the tasks and shuts them down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from dripline.clock import Clock, SystemClock
from dripline.dispatcher import outcomes
from dripline.dispatcher.breaker import Breaker
from dripline.dispatcher.claimer import Claimer
from dripline.dispatcher.constants import JOIN_LOOK_S, STOP_GRACE_S
from dripline.dispatcher.context import Context, RunState
from dripline.dispatcher.control import Controller, Heartbeat
from dripline.dispatcher.launcher import Launcher
from dripline.dispatcher.pacing import SenderPacing
from dripline.dispatcher.policies import initial_limits
from dripline.dispatcher.recorder import Recorder
from dripline.dispatcher.responses import Responder
from dripline.dispatcher.send import Sender, SendResultLike
from dripline.dispatcher.share import ShareGate
from dripline.dispatcher.stats import DispatchObserver, DispatchStats, FanOut
from dripline.dispatcher.tier import TierReader
from dripline.flows.base import FlowRegistry
from dripline.settings import Policy, Settings
from dripline.store.base import Store

__all__ = ["Dispatcher", "RunSummary", "SendResultLike", "Sender"]

log = structlog.get_logger("dripline.dispatcher")


@dataclass
class RunSummary:
    """How a run ended, for the CLI and the demo."""

    worker_id: str
    stats: DispatchStats
    started_at: datetime
    ended_at: datetime
    breaker_tripped: bool = False
    breaker_reason: str | None = None

    @property
    def exit_code(self) -> int:
        return 3 if self.breaker_tripped else 0


def _worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Dispatcher:
    """Sends every due question on time, at the configured rate, at most once."""

    def __init__(
        self,
        *,
        store: Store,
        client: Sender,
        flows: FlowRegistry,
        settings: Settings,
        clock: Clock | None = None,
        observer: DispatchObserver | None = None,
        worker_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.stats = DispatchStats()
        self.settings = settings
        self._client = client
        policy = settings.policy
        limits = initial_limits(policy, settings.batch_limit, settings.concurrency)
        # The seed's design has no rate limiter at all; the baseline must not get one.
        # The default number's own rate when it has one in `senders` (else rate_per_s).
        own = settings.sender_rate(settings.whatsapp_phone_number_id)
        rate = 1e9 if policy is Policy.SEED_CRON else own or settings.rate_per_s
        self._ctx = Context(
            store=store,
            flows=flows,
            settings=settings,
            clock=clock or SystemClock(),
            observer=FanOut(self.stats, observer) if observer else self.stats,
            stats=self.stats,
            rng=rng or random.Random(),
            worker_id=worker_id or _worker_id(),
            policy=policy,
            batch_limit=limits.batch_limit,
            concurrency=limits.concurrency,
            rate_share=rate,
            rate_per_s=rate,
        )
        self._build()

    def _build(self) -> None:
        """Fresh parts for a run (a dispatcher may run again, e.g. `once` in a loop)."""
        ctx = self._ctx
        heartbeat_s = ctx.settings.heartbeat_s
        ctx.gate = ShareGate(
            live_after_s=3 * heartbeat_s,
            margin_s=heartbeat_s / 2,
            always_open=ctx.policy is Policy.SEED_CRON,
        )
        self._breaker = Breaker()
        self._tier = TierReader(ctx, self._client)
        self._pacing = SenderPacing(ctx.rate_per_s)
        self._tier.pacing = self._pacing
        if ctx.policy is not Policy.SEED_CRON:
            # Every other number at its own rate (set, or 80/s until its tier is read).
            for number in ctx.settings.sender_ids[1:]:
                rate = ctx.settings.sender_rate(number)
                self._pacing.set_number_rate(number, rate or ctx.settings.rate_per_s)
            ctx.rate_share = self._pacing.total_ceiling(ctx.settings.sender_ids)
        self._recorder = Recorder(ctx)
        self._responder = Responder(
            ctx,
            self._recorder,
            self._pacing,
            trip=self._trip_breaker,
            close_breaker=self._close_breaker,
            breaker=self._breaker,
            on_throttle_streak=self._tier.after_throttle,
        )
        self._controller = Controller(ctx, self._pacing, self._responder)
        pacing = self._pacing
        self._claimer = Claimer(
            ctx, self._recorder, self._controller.apply_tiers, workers=lambda: pacing.workers
        )
        self._launcher = Launcher(ctx, self._client, self._pacing, self._recorder, self._responder)
        self._heartbeat = Heartbeat(ctx, self._pacing, ctx.clock.now())

    # ------------------------------------------------------------------ public
    @property
    def worker_id(self) -> str:
        return self._ctx.worker_id

    @property
    def state(self) -> RunState:
        """The run's queue and counters, read-only (progress displays and tests)."""
        return self._ctx.state

    def senders_snapshot(self) -> dict[str, dict[str, float]]:
        """Per sender number: its rate, sends, throttles and errors (metrics)."""
        return self._pacing.snapshot()

    @property
    def concurrency(self) -> int:
        return self._ctx.concurrency

    @property
    def batch_limit(self) -> int:
        return self._ctx.batch_limit

    def request_stop(self) -> None:
        """Begin a graceful shutdown: stop claiming, finish in-flight sends."""
        self._ctx.signals.stop.set()
        self._ctx.signals.wake_all()

    async def run(self, *, once: bool = False, max_seconds: float | None = None) -> RunSummary:
        """Dispatch until stopped (or, with `once`, until nothing is due or the budget ends).

        Graceful shutdown on `request_stop()`: unsent claims are released, in-flight
        sends get `shutdown_deadline_s`, every outcome is written before returning.
        """
        ctx = self._ctx
        ctx.state = RunState()
        ctx.signals.reset()
        self._build()
        started = ctx.clock.now()
        # The tier's rate applies from the heartbeat after the read; until then, and if
        # the read fails or hangs, the rate in force (80/s) holds: nothing waits on it.
        ctx.spawn(self._tier.read("start"), "tier-read")
        await ctx.retry_db(self._heartbeat.beat, "register worker")
        await self._wait_for_room()
        ctx.emit_limits(self._pacing.total_rate())
        workers = [
            ctx.spawn(self._claimer.run(once), "claimer"),
            ctx.spawn(self._launcher.run(), "launcher"),
        ]
        side = [
            ctx.spawn(self._recorder.run(), "recorder"),
            ctx.spawn(self._heartbeat.run(), "heartbeat"),
            ctx.spawn(self._controller.run(), "controller"),
        ]
        loop = asyncio.get_running_loop()
        budget = None if max_seconds is None else loop.time() + max_seconds
        stop_wait = asyncio.ensure_future(ctx.signals.stop.wait())
        claimer = workers[0]
        try:
            pending: set[asyncio.Future[Any]] = {stop_wait, *workers, *side}
            while not ctx.stopping and not claimer.done():
                timeout = None if budget is None else budget - loop.time()
                if timeout is not None and timeout <= 0:
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for task in [t for t in (stop_wait, *workers, *side) if t in done]:
                    exc = None if task is stop_wait else task.exception()
                    if exc is not None:
                        raise exc
        finally:
            self.request_stop()
            stop_wait.cancel()
            await asyncio.shield(self._shutdown(workers, side))
        return RunSummary(
            worker_id=ctx.worker_id,
            stats=self.stats,
            started_at=started,
            ended_at=ctx.clock.now(),
            breaker_tripped=self._breaker.tripped,
            breaker_reason=self._breaker.reason,
        )

    async def _wait_for_room(self) -> None:
        """Joining live workers: wait until each has lowered its share (see Heartbeat).

        At most 4 heartbeats: a worker that stops beating drops out of the live set
        after 3 heartbeats, and then no longer counts."""
        ctx = self._ctx
        every = ctx.settings.heartbeat_s
        began = ctx.loop_time()
        beat_at = began + every / 4
        look = min(JOIN_LOOK_S, every / 4)
        while not ctx.gate.caught_up and not ctx.stopping and ctx.loop_time() - began < 4 * every:
            # Read the others often (cheap); beat when they are ready, when one came
            # after us (it waits for our beat too), or when our row is due a beat (it
            # must stay live for them to count us).
            await ctx.sleep(look)
            if ctx.loop_time() < beat_at:
                others = await ctx.retry_db(self._heartbeat.live_others, "live workers")
                if not (ctx.gate.ready(others) or ctx.gate.outdated(others)):
                    continue
            await ctx.retry_db(self._heartbeat.beat, "heartbeat")
            beat_at = ctx.loop_time() + every / 4
        ctx.stats.join_wait_s = ctx.loop_time() - began

    # ---------------------------------------------------------- circuit breaker
    def _trip_breaker(self, reason: str, probe_after_s: float | None = None) -> None:
        """Stop sending. `probe_after_s`: when to try again (None: `auth_probe_s`; a
        spam-rate limit says an hour)."""
        ctx = self._ctx
        if not self._breaker.trip(reason):
            return
        ctx.signals.breaker_closed.clear()
        ctx.observer.on_breaker(True, reason)
        log.error(
            "circuit breaker open: sending stopped",
            reason=reason,
            action=ctx.settings.on_auth_failure,
        )
        # Give every queued claim back untouched.
        while ctx.state.queue:
            conv = ctx.state.queue.popleft()
            self._recorder.finish(conv, outcomes.unchanged(conv))
        if ctx.settings.on_auth_failure == "exit":
            self.request_stop()
        else:
            ctx.spawn(self._probe_later(probe_after_s), "breaker-probe")

    async def _probe_later(self, probe_after_s: float | None) -> None:
        ctx = self._ctx
        await ctx.sleep(ctx.settings.auth_probe_s if probe_after_s is None else probe_after_s)
        if ctx.stopping:
            return
        log.info("circuit breaker half-open: probing with the next due message")
        # Half-open: one send at a time until a success closes the breaker.
        self._breaker.half_open(ctx.concurrency)
        ctx.concurrency = 1
        ctx.signals.breaker_closed.set()

    def _close_breaker(self, restore: int) -> None:
        ctx = self._ctx
        if restore:
            ctx.concurrency = restore
        ctx.signals.breaker_closed.set()
        ctx.observer.on_breaker(False, None)
        log.info("circuit breaker closed: sending resumed")

    # ----------------------------------------------------------------- shutdown
    @staticmethod
    async def _finish_tasks(tasks: list[asyncio.Task[Any]], grace_s: float) -> None:
        """Let `tasks` return by themselves within `grace_s`, then cancel the rest."""
        if not tasks:
            return
        if grace_s > 0:
            await asyncio.wait(tasks, timeout=grace_s)
        late = [t for t in tasks if not t.done()]
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _shutdown(
        self, workers: list[asyncio.Task[Any]], side: list[asyncio.Task[Any]]
    ) -> None:
        ctx = self._ctx
        state = ctx.state
        # Every task watches the stop event and returns at its next step. Cancelling one
        # in the middle of a database call could leave its transaction (and, on SQLite,
        # the write lock) open until the connection is collected: only stragglers are
        # cancelled.
        await self._finish_tasks(workers, STOP_GRACE_S)
        # Unsent claims go back to the pool at once, unchanged.
        unsent = [c.id for c in state.queue]
        state.queue.clear()
        for cid in unsent:
            state.let_go(cid)
        sends = [t for t, name in ctx.tasks.items() if name == "send"]
        if sends:
            await asyncio.wait(sends, timeout=ctx.settings.shutdown_deadline_s)
            still = [t for t in sends if not t.done()]
            for task in still:
                task.cancel()
            if still:
                log.warning(
                    "shutdown deadline passed; in-flight sends cancelled", cancelled=len(still)
                )
                await asyncio.gather(*still, return_exceptions=True)
        await self._finish_tasks(side, STOP_GRACE_S)
        await self._finish_tasks(list(ctx.tasks), 0.0)
        with contextlib.suppress(Exception):
            await self._recorder.flush()
        leftovers = unsent + list(state.held)
        with contextlib.suppress(Exception):
            if leftovers:
                await ctx.store.release(leftovers, ctx.worker_id)
        with contextlib.suppress(Exception):
            await ctx.store.unregister(ctx.worker_id)
        log.info(
            "dispatcher stopped",
            sent=self.stats.sent,
            failed=self.stats.failed,
            released=len(leftovers),
        )
