"""The side tasks: the heartbeat (workers share the rate) and the controller (rates creep
back after throttles, adaptive concurrency, the seed's tiers, a progress line)."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import structlog

from dripline.dispatcher.constants import CONTROLLER_INTERVAL_S, PROGRESS_LOG_S, SHARE_LOOK_S
from dripline.dispatcher.context import Context
from dripline.dispatcher.pacing import SenderPacing
from dripline.dispatcher.policies import AimdState, aimd_step, tier_limits
from dripline.dispatcher.responses import Responder
from dripline.errors import DatabaseUnavailable, StoreError
from dripline.settings import Policy
from dripline.store.base import WorkerInfo

__all__ = ["Controller", "Heartbeat"]

log = structlog.get_logger("dripline.dispatcher")

_Counts = tuple[int, int, int, int, int]


class Heartbeat:
    """Registers this worker, learns how many are live, and keeps queued leases alive.

    Workers split the configured rate by the number of live workers; `ctx.gate`
    (`share.ShareGate`) says when this one may send at its share.
    """

    def __init__(self, ctx: Context, pacing: SenderPacing, started: datetime) -> None:
        self._ctx = ctx
        self._pacing = pacing
        self.started = started
        self.beats = 0

    async def beat(self) -> None:
        ctx = self._ctx
        began = ctx.loop_time()
        now = ctx.clock.now()
        stats = ctx.stats
        info = WorkerInfo(
            id=ctx.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started,
            heartbeat_at=now,
            rate_per_s=ctx.rate_share,
            concurrency=ctx.concurrency,
            policy=ctx.policy.value,
            stats={
                "sent": stats.sent,
                "failed": stats.failed,
                "throttled": stats.throttled,
                "retries": stats.retries,
                "in_flight": ctx.state.in_flight,
                "beats": self.beats + 1,
                # For `dripline status`: why sending stopped, and the latest alerts.
                "breaker": stats.breaker_reason if stats.breaker_open else None,
                "alerts": list(stats.alerts),
                # The throughput tier and the global rate it gives (status, dashboard).
                "tier": None
                if ctx.tier is None
                else {
                    "level": ctx.tier.level,
                    "rate_per_s": ctx.tier.rate_per_s,
                    "source": ctx.tier.source,
                },
                # Per sender number: its rate, sends, throttles, errors (status, metrics).
                "senders": self._pacing.snapshot(),
            },
        )
        live = await ctx.store.heartbeat(info, live_after_s=ctx.gate.live_after_s)
        self.beats += 1
        others = {w.id: int(w.stats.get("beats", 0)) for w in live if w.id != ctx.worker_id}
        ctx.gate.on_beat(began, others)
        if ctx.policy is not Policy.SEED_CRON:
            workers = max(1, len(live))
            self._pacing.set_share(ctx.rate_per_s / workers, workers)
            # This worker's rate: its share of every configured number's rate together
            # (claims are sized to it).
            share = self._pacing.total_ceiling(ctx.settings.sender_ids)
            if abs(share - ctx.rate_share) > 1e-9:
                log.info("rate share", workers=len(live), rate_per_s=round(share, 2))
                ctx.rate_share = share
                ctx.emit_limits(self._pacing.total_rate())
        await self._extend(now)

    async def _extend(self, now: datetime) -> None:
        """Keep alive the lease of every conversation this worker still holds: queued,
        in flight or waiting to be recorded (a send slower than the lease, or a record
        write held up by the database, must not let the lease lapse). A lease that did
        not extend (it lapsed, and another worker or a STOP may have taken over) is
        forgotten: nothing more is sent for it (see `send_one`)."""
        ctx = self._ctx
        state = ctx.state
        held = sorted(state.held)
        if not held:
            return
        ttl = ctx.settings.lease_ttl_s
        extended = set(await ctx.store.extend_leases(held, ctx.worker_id, ttl, now))
        until = now + timedelta(seconds=ttl)
        for cid in held:
            if cid not in state.held:
                continue  # recorded while we waited: already let go
            if cid in extended:
                state.lease_until[cid] = until
            else:
                state.lease_until.pop(cid, None)

    async def live_others(self) -> dict[str, int]:
        """The other live workers and their beat counts (a read; nothing written)."""
        ctx = self._ctx
        live = await ctx.store.live_workers(ctx.clock.now(), live_after_s=ctx.gate.live_after_s)
        return {w.id: int(w.stats.get("beats", 0)) for w in live if w.id != ctx.worker_id}

    async def run(self) -> None:
        """Beat every `heartbeat_s`; in between, while there is a backlog to send,
        look at the live workers every SHARE_LOOK_S and beat at once when they changed
        (a joiner sends nothing until we have: share.py).

        A backlog is the launcher having had to wait with sends queued
        (`Signals.backlog`), not the queue merely holding something: at a trickle
        every claim queues a row the launcher takes at once, and waking for each
        one cost this task one or two wake-ups per message (issue 14, item 2)."""
        ctx = self._ctx
        backlog = ctx.signals.backlog
        every = ctx.settings.heartbeat_s
        look = min(SHARE_LOOK_S, every / 4)
        due = ctx.loop_time() + every
        looks_from = ctx.loop_time()
        while not ctx.stopping:
            left = due - ctx.loop_time()
            if backlog.is_set():
                await ctx.sleep(min(look, left))
            else:
                # No backlog: no looks until there is one (a wake every SHARE_LOOK_S
                # costs an idle worker ~0.25% of a core, measured).
                await ctx.sleep(left, backlog)
            if ctx.stopping:
                return
            now = ctx.loop_time()
            # Within a millisecond is due: a sleep shorter than the clock's resolution
            # at `now` would not move it (a spin, seen in virtual time).
            if now < due - 1e-3:
                if not ctx.state.queue or now < looks_from:
                    continue
                try:
                    if not ctx.gate.outdated(await self.live_others()):
                        continue
                except (DatabaseUnavailable, StoreError, OSError):
                    looks_from = due  # the beat will say so; no retries in between
                    continue
            try:
                await self.beat()
            except (DatabaseUnavailable, StoreError, OSError) as exc:
                log.warning("heartbeat failed", error=str(exc))
            due = ctx.loop_time() + every
            looks_from = ctx.loop_time()


class Controller:
    """Twice a second: rates, adaptive concurrency, and every 10 s a progress line."""

    def __init__(self, ctx: Context, pacing: SenderPacing, responder: Responder) -> None:
        self._ctx = ctx
        self._pacing = pacing
        self._responder = responder
        s = ctx.settings
        self._aimd = AimdState(limit=float(ctx.concurrency), floor=1, ceiling=s.max_concurrency)
        self._latency_baseline: float | None = None

    async def run(self) -> None:
        ctx = self._ctx
        last_log = ctx.loop_time()
        last: _Counts = (0, 0, 0, 0, 0)
        while not ctx.stopping:
            await ctx.sleep(CONTROLLER_INTERVAL_S)
            loop_now = ctx.loop_time()
            if loop_now - last_log >= PROGRESS_LOG_S:
                last = self._log_progress(loop_now - last_log, last)
                last_log = loop_now
            self._pacing.tick(loop_now)
            samples = list(self._responder.latencies)
            self._responder.latencies.clear()
            if ctx.policy is Policy.ADAPTIVE:
                self._adapt_concurrency(samples)
            self._responder.throttled_since_tick = False
            ctx.emit_limits(self._pacing.total_rate())

    async def apply_tiers(self) -> None:
        """The seed's dynamic tiers: batch and concurrency from the due backlog."""
        ctx = self._ctx
        now = ctx.clock.now()
        counts = await ctx.retry_db(lambda: ctx.store.backlog(now), "backlog")
        limits = tier_limits(counts.due_now, ctx.settings.tier_thresholds)
        if (limits.batch_limit, limits.concurrency) != (ctx.batch_limit, ctx.concurrency):
            log.info(
                "tier change",
                due=counts.due_now,
                batch_limit=limits.batch_limit,
                concurrency=limits.concurrency,
            )
            ctx.batch_limit, ctx.concurrency = limits.batch_limit, limits.concurrency
            ctx.emit_limits(self._pacing.total_rate())
            ctx.signals.slots_freed(ctx.concurrency - ctx.state.in_flight)

    def _adapt_concurrency(self, samples: list[float]) -> None:
        ctx = self._ctx
        ratio = 1.0
        if samples:
            samples.sort()
            p50 = samples[len(samples) // 2]
            if self._latency_baseline is None:
                self._latency_baseline = p50
            else:
                self._latency_baseline = min(self._latency_baseline * 1.01, p50)
            ratio = p50 / self._latency_baseline if self._latency_baseline else 1.0
        saturated = ctx.state.in_flight >= 0.9 * ctx.concurrency
        self._aimd = aimd_step(
            self._aimd,
            throttled=self._responder.throttled_since_tick,
            latency_ratio=ratio,
            saturated=saturated,
            increase=max(1.0, self._aimd.limit * 0.1),
        )
        new = int(self._aimd.limit)
        if new != ctx.concurrency:
            ctx.concurrency = new
            ctx.signals.slots_freed(ctx.concurrency - ctx.state.in_flight)

    def _log_progress(self, window_s: float, last: _Counts) -> _Counts:
        """One line per period: the seed guide's "Messages due" and "Processing took",
        for a continuous dispatcher."""
        ctx = self._ctx
        st = ctx.stats
        now = (st.claimed, st.sent, st.failed, st.throttled, st.claims)
        claimed, sent, failed, throttled, claims = (a - b for a, b in zip(now, last, strict=True))
        if claimed or sent or failed or ctx.state.in_flight:
            lag50, lag99 = st.lag.quantiles(0.5, 0.99)
            log.info(
                "dispatch progress",
                window_s=round(window_s, 1),
                claims=claims,
                claimed=claimed,
                sent=sent,
                failed=failed,
                throttled=throttled,
                per_s=round(sent / window_s, 1),
                queued=len(ctx.state.queue),
                in_flight=ctx.state.in_flight,
                concurrency=ctx.concurrency,
                rate_per_s=round(ctx.rate_share, 1),
                lag_p50_s=round(lag50, 3),
                lag_p99_s=round(lag99, 3),
            )
        return now
