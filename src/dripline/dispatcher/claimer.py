"""The claimer: keeps the launch queue filled with leased, due conversations.

It claims about CLAIM_HORIZON_S of sending at the rate limit (less when several
workers share it: `policies.claim_horizon`), and claims again when the queue falls to
half of that (pipelining), so the launcher never waits on the
database. When nothing more is due it sleeps until the earliest `next_send_at` (at most
`poll_ceiling_s`), which the claim's own transaction reports (`Store.claim_next`), waking
early on an enrollment (`Store.wakeup_event`) or on one of our own writes that made a
row due sooner (`Signals.resched`). Both are watched from before the claim: a write that
commits after the claim read the table still wakes the claimer.

The seed's cron policy instead claims `batch_limit` rows once per `interval_s`, and
skips a tick while the previous one is still sending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from dripline.dispatcher.constants import CLAIM_HORIZON_S, RECORD_INTERVAL_S
from dripline.dispatcher.context import Context
from dripline.dispatcher.policies import claim_horizon, claim_size
from dripline.dispatcher.recorder import Recorder
from dripline.settings import Policy
from dripline.store.base import Conversation

__all__ = ["Claimer", "low_water"]

log = structlog.get_logger("dripline.dispatcher")


def low_water(batch_limit: int, rate_share: float, horizon_s: float = CLAIM_HORIZON_S) -> int:
    """Queue length below which the claimer claims again: half a horizon's worth."""
    return max(1, min(batch_limit, int(rate_share * horizon_s)) // 2)


class Claimer:
    def __init__(
        self,
        ctx: Context,
        recorder: Recorder,
        apply_tiers: Callable[[], Awaitable[None]],
        workers: Callable[[], int] = lambda: 1,
    ) -> None:
        self._ctx = ctx
        self._recorder = recorder
        self._apply_tiers = apply_tiers
        self._workers = workers  # live workers, as the last heartbeat saw them

    def horizon(self) -> float:
        return claim_horizon(self._workers())

    def low_water(self) -> int:
        return low_water(self._ctx.batch_limit, self._ctx.rate_share, self.horizon())

    async def run(self, once: bool) -> None:
        ctx = self._ctx
        state, signals = ctx.state, ctx.signals
        cron = ctx.policy is Policy.SEED_CRON
        interval = ctx.settings.interval_s if cron else 0.0
        next_tick = ctx.loop_time()
        wakeup = ctx.store.wakeup_event()
        last_tier_check = -1e9
        ctx.stats.awake_since = ctx.loop_time()
        while not ctx.stopping:
            await signals.breaker_closed.wait()
            if ctx.stopping:
                break
            loop_now = ctx.loop_time()
            if cron:
                # The seed's cron: one fetch per tick, skipped while the last run is busy.
                if loop_now < next_tick or state.busy():
                    if once and state.cron_tick_done and not state.busy():
                        return
                    await self._nap(min(0.05, max(0.0, next_tick - loop_now)) or 0.05)
                    continue
                next_tick = loop_now + interval
                want = ctx.batch_limit
            else:
                if ctx.policy is Policy.TIERS and loop_now - last_tier_check >= 1.0:
                    last_tier_check = loop_now
                    await self._apply_tiers()
                queued = len(state.queue)
                if queued >= self.low_water():
                    signals.room.clear()
                    await ctx.sleep(1.0, signals.room)
                    continue
                horizon = self.horizon()
                want = max(1, claim_size(ctx.batch_limit, ctx.rate_share, horizon, queued))
            rows, next_due = await self._claim(want, wakeup)
            if cron:
                state.cron_tick_done = True
                continue
            if len(rows) >= want:
                continue  # more may be due right now
            if once:
                if not rows and not state.busy():
                    if not self._recorder.pending:
                        return
                    # Outcomes may reschedule work (a throttle retry) that is due soon.
                    await self._nap(RECORD_INTERVAL_S * 2)
                    continue
                await self._nap(RECORD_INTERVAL_S)
                continue
            await self._sleep_until_due(wakeup, next_due)

    async def _claim(
        self, want: int, wakeup: asyncio.Event
    ) -> tuple[list[Conversation], datetime | None]:
        """Lease up to `want` due rows; also returns the earliest due time left."""
        ctx = self._ctx
        state = ctx.state
        # From here on an enrollment, or one of our own writes making a row due within
        # the poll ceiling, wakes the sleep that may follow (see _sleep_until_due).
        wakeup.clear()
        ctx.signals.resched.clear()
        self._recorder.wake_in(ctx.settings.poll_ceiling_s)
        started = time.perf_counter()
        now = ctx.clock.now()
        store, ttl = ctx.store, ctx.settings.lease_ttl_s
        # Outcomes waiting to be written go in the claim's transaction where the store
        # can (one trip instead of two at a trickle); the claim then sees them.
        batch = self._recorder.take() if store.claims_with_record else []
        if batch:
            try:
                _, claim = await ctx.retry_db(
                    lambda: store.record_and_claim(batch, want, ttl, ctx.worker_id, now),
                    "record results and claim",
                )
            except BaseException:
                self._recorder.put_back(batch)  # nothing recorded is ever dropped
                raise
            ctx.observer.on_record(len(batch), time.perf_counter() - started)
        else:
            claim = await ctx.retry_db(
                lambda: store.claim_next(want, ttl, ctx.worker_id, now), "claim"
            )
        # Reschedules noted meanwhile armed their own wake-ups (Recorder).
        self._recorder.wake_at = None
        rows = claim.conversations
        ctx.observer.on_claim(len(rows), time.perf_counter() - started)
        if rows:
            log.debug(
                "claimed", claimed=len(rows), queued=len(state.queue), in_flight=state.in_flight
            )
            fresh = []
            for row in rows:
                if row.id in state.held:
                    # Ours already (its lease lapsed while its outcome waited for the
                    # database): the claim renewed the lease; the outcome still decides.
                    if row.lease_expires_at is not None:
                        state.lease_until[row.id] = row.lease_expires_at
                    continue
                state.hold(row)
                fresh.append(row)
            state.queue.extend(fresh)
            ctx.signals.queued.set()
        return rows, claim.next_due_at

    async def _sleep_until_due(self, wakeup: asyncio.Event, next_due: datetime | None) -> None:
        """Nothing more is due: sleep until `next_due`, the earliest next_send_at the
        claim left (capped), or until an enrollment or one of our own reschedules since
        the claim began makes something due sooner."""
        ctx = self._ctx
        ceiling = ctx.settings.poll_ceiling_s
        delay = ceiling if next_due is None else (next_due - ctx.clock.now()).total_seconds()
        delay = min(ceiling, delay)
        if delay <= 0:
            # Due rows exist but are leased elsewhere: brief pause.
            delay = 0.01
        self._recorder.wake_in(delay)
        await self._nap(delay, wakeup, ctx.signals.resched)
        self._recorder.wake_at = None

    async def _nap(self, seconds: float, *events: asyncio.Event) -> None:
        """An idle sleep (nothing to claim now); the launcher waiting for the queue
        meanwhile is not the pipeline running dry (stats.py)."""
        await self._ctx.sleep(seconds, *events)
        self._ctx.stats.awake_since = self._ctx.loop_time()
