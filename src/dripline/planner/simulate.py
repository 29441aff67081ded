"""A discrete-event simulation of the dispatcher, fast enough for grids and searches.

Every policy sends in due order (first in, first out), so the simulation walks messages
in that order instead of keeping a general event queue: a send starts at the latest of
(when its row was claimed, when a concurrency slot frees, when the rate limiter allows
it), and the slots are a min-heap of finish times, which is exactly pLimit (a send
starts as soon as any in-flight one finishes). Claims, cron ticks and policy decisions
happen between sends. That is O(n log c) for n messages and concurrency c, so 100,000
messages take a fraction of a second.

The policy decisions are the real dispatcher's (`dripline.dispatcher.policies`):
`tier_limits` per run, `aimd_step` per claim cycle, `concurrency_for_rate` as the
adaptive ceiling, so a change there changes the plan too.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence

# The claimer keeps CLAIM_HORIZON_S of sending queued, and the controller adjusts rate
# and concurrency every CONTROLLER_INTERVAL_S: the same constants as the dispatcher's.
from dripline.dispatcher.constants import CLAIM_HORIZON_S, CONTROLLER_INTERVAL_S
from dripline.dispatcher.policies import (
    AimdState,
    Limits,
    aimd_step,
    claim_size,
    concurrency_for_rate,
    initial_limits,
    tier_limits,
)
from dripline.planner.model import Arrivals, LatencyModel, PlanSettings, SimResult
from dripline.planner.pool import Pool, peak_rate
from dripline.settings import Policy

__all__ = ["capacity_per_s", "percentile", "simulate"]

# Throttled sends are retried without limit in dripline; a cap keeps a hopeless
# configuration (server limit far below the load) from simulating forever.
_MAX_ATTEMPTS = 60
_DAY_S = 86_400


def simulate(
    settings: PlanSettings,
    latency: LatencyModel,
    arrivals: Arrivals | Sequence[float],
    *,
    seed: int = 0,
) -> SimResult:
    """Simulate `settings` sending `arrivals` (a profile or explicit due times, seconds)
    with per-send `latency`; deterministic for a given `seed`."""
    if isinstance(arrivals, Arrivals):
        due = arrivals.due_times(random.Random(seed))
        label = arrivals.label or arrivals.kind
    else:
        due = sorted(float(t) for t in arrivals)
        label = f"{len(due):,} explicit"
    # A separate stream for latency, so changing the arrivals does not reshuffle it.
    sample = latency.sampler(random.Random(seed + 1_000_003))
    sim = _Sim(settings, latency, due, sample, random.Random(seed + 2_000_003))
    if settings.effective_schedule == "cron":
        sim.run_cron()
    else:
        sim.run_continuous()
    return sim.result(latency.describe(), label)


def capacity_per_s(settings: PlanSettings, mean_latency_s: float) -> tuple[float, str]:
    """The most messages per second the configuration can sustain, and what binds.

    Continuous: min(rate, concurrency / latency, batch / claim time, server rate, CPU),
    which is Little's law for the concurrency term; CPU is cores / CPU per message when
    the settings carry a `CpuBudget`. Cron: the largest batch per run, divided by
    the interval (or by the interval times the ticks a long run makes it skip).
    """
    limits = _max_limits(settings, mean_latency_s)
    candidates: list[tuple[float, str]] = []
    if settings.effective_schedule == "cron":
        run_s = settings.query_s + _run_send_s(limits, mean_latency_s, settings)
        period = settings.interval_s * max(1, math.ceil(run_s / settings.interval_s))
        candidates.append((limits.batch_limit / period, "batch/interval"))
    else:
        candidates.append((limits.concurrency / mean_latency_s, "concurrency/latency"))
        candidates.append(
            (limits.batch_limit / max(settings.claim_overhead_s, 1e-9), "batch/claim")
        )
    if settings.client_rate_limited and settings.rate_per_s is not None:
        candidates.append((settings.rate_per_s, "rate limit"))
    if settings.server_rate_per_s is not None:
        candidates.append((settings.server_rate_per_s, "API throttling"))
    if settings.cpu is not None:
        candidates.append((settings.cpu.limit_per_s(), settings.cpu.binding()))
    return min(candidates, key=lambda c: c[0])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of already sorted values; 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _run_send_s(limits: Limits, latency_s: float, settings: PlanSettings) -> float:
    waves = math.ceil(limits.batch_limit / limits.concurrency) * latency_s
    if settings.client_rate_limited and settings.rate_per_s:
        return max(waves, limits.batch_limit / settings.rate_per_s)
    return waves


def _max_limits(settings: PlanSettings, latency_s: float) -> Limits:
    """The largest limits the policy can reach (for capacity and connection counts)."""
    if settings.policy is Policy.TIERS:
        return tier_limits(settings.tier_thresholds[0] + 1, settings.tier_thresholds)
    if settings.policy is Policy.ADAPTIVE:
        return Limits(settings.batch_limit, _adaptive_ceiling(settings, latency_s))
    return Limits(settings.batch_limit, settings.concurrency)


def _adaptive_ceiling(settings: PlanSettings, latency_s: float) -> int:
    # More in flight than the rate limit can feed only queues at the limiter.
    ceiling = settings.max_concurrency
    if settings.rate_per_s is not None:
        ceiling = min(ceiling, concurrency_for_rate(settings.rate_per_s, latency_s))
    return max(1, ceiling)


class _Sim:
    def __init__(
        self,
        st: PlanSettings,
        latency: LatencyModel,
        due: list[float],
        sample: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.st = st
        self.latency = latency
        self.pool = Pool(due)
        self.sample = sample
        self.rng = rng
        self.messages = len(due)
        self.slots: list[float] = [0.0] * st.concurrency
        # Client limiter as GCRA (a token bucket by its theoretical arrival time).
        self.client_step = 1 / st.rate_per_s if st.client_rate_limited and st.rate_per_s else 0.0
        self.client_tol = max(0.0, st.burst - 1) * self.client_step
        self.client_tat = 0.0
        self.server_step = 1 / st.server_rate_per_s if st.server_rate_per_s else 0.0
        server_burst = (st.server_rate_per_s or 0.0) * st.server_burst_s
        self.server_tol = max(0.0, server_burst - 1) * self.server_step
        self.server_tat = 0.0
        # The CPU as one more server in front of every send: each attempt costs
        # 1 / the CPU bound of the cores' time, so sends cannot leave faster than the
        # cores pay for them (no burst: CPU not spent is not saved up).
        self.cpu_step = 1 / st.cpu.limit_per_s() if st.cpu is not None else 0.0
        self.cpu_tat = 0.0
        self.first_sent_start = math.inf
        self.last_sent_start = -math.inf
        self.continuous = st.effective_schedule == "continuous"
        self.rate_ceiling = st.rate_per_s or 0.0
        self.rate_now = self.rate_ceiling
        self.last_cut = -1e9
        self.observed_rate: float | None = None
        self.accepted_in_window = 0
        self.window_start = 0.0
        self.next_tick = CONTROLLER_INTERVAL_S
        self.starts: list[float] = []
        self.lags: list[float] = []
        self.throttled = 0
        self.throttled_in_cycle = False
        self.sent = 0
        self.last_finish = 0.0
        self.run_times: list[float] = []
        self.runs = 0
        self.skipped = 0
        self.waves = 0
        self.empty_done = 0.0
        limits = initial_limits(st.policy, st.batch_limit, st.concurrency)
        if st.policy is Policy.SEED_CRON:
            # The planner varies the seed's batch and concurrency to compute the guide's
            # other rows; the real seed-cron policy pins them to 30/5.
            limits = Limits(st.batch_limit, st.concurrency)
        self.limits = limits
        self.aimd = AimdState(
            limit=float(min(limits.concurrency, _adaptive_ceiling(st, latency.mean_s))),
            ceiling=_adaptive_ceiling(st, latency.mean_s),
        )
        if st.policy is Policy.ADAPTIVE:
            self.limits = Limits(limits.batch_limit, int(self.aimd.limit))
        self.max_concurrency_used = self.limits.concurrency

    # -- sending -------------------------------------------------------------------

    def _resize(self, concurrency: int, now: float) -> None:
        """Change the in-flight limit: new slots are free now; removing slots drops the
        earliest-finishing ones, so the next start waits until in-flight < the limit."""
        self.max_concurrency_used = max(self.max_concurrency_used, concurrency)
        while len(self.slots) < concurrency:
            heapq.heappush(self.slots, now)
        while len(self.slots) > concurrency:
            heapq.heappop(self.slots)

    def _peek_start(self, ready: float) -> float:
        """When a send ready at `ready` would start, without starting it."""
        start = max(ready, self.slots[0])
        if self.client_step:
            start = max(start, self.client_tat - self.client_tol)
        if self.cpu_step:
            start = max(start, self.cpu_tat)
        return start

    def _send(self, ready: float, due: float, attempts: int) -> tuple[float, float]:
        """Start one send no earlier than `ready`; returns (start, finish)."""
        start = max(ready, self.slots[0])
        if self.continuous and start >= self.next_tick:
            self._controller_tick(start, saturated=ready < self.slots[0])
        if self.client_step:
            start = max(start, self.client_tat - self.client_tol)
            self.client_tat = max(self.client_tat, start) + self.client_step
        if self.cpu_step:
            start = max(start, self.cpu_tat)
            self.cpu_tat = start + self.cpu_step
        finish = start + self.sample()
        heapq.heapreplace(self.slots, finish)
        self.starts.append(start)
        throttled = False
        if self.server_step:
            if start >= self.server_tat - self.server_tol:
                self.server_tat = max(self.server_tat, start) + self.server_step
            else:
                throttled = True
        if throttled and attempts + 1 < _MAX_ATTEMPTS:
            self.throttled += 1
            self.throttled_in_cycle = True
            if self.continuous and self.client_step:
                self._cut_rate(finish)
            # Exponential backoff with full jitter, rescheduled in the database (a retry
            # never waits inside a concurrency slot).
            cap = min(self.st.backoff_cap_s, self.st.backoff_base_s * 2**attempts)
            self.pool.retry(finish + self.rng.random() * cap, due, attempts + 1)
        else:
            self.sent += 1
            self.accepted_in_window += 1
            self.lags.append(start - due)
            self.first_sent_start = min(self.first_sent_start, start)
            self.last_sent_start = max(self.last_sent_start, start)
            self.last_finish = max(self.last_finish, finish)
        return start, finish

    def _claim_want(self, limits: Limits, queued: int) -> int:
        """Rows to claim: the dispatcher's `claim_size` over the claim horizon."""
        if not self.st.client_rate_limited or not self.st.rate_per_s:
            return limits.batch_limit
        return max(1, claim_size(limits.batch_limit, self.rate_now, CLAIM_HORIZON_S, queued))

    def _low_water(self, limits: Limits) -> int:
        rate = self.rate_now if self.st.client_rate_limited and self.rate_now else math.inf
        horizon_rows = min(float(limits.batch_limit), rate * CLAIM_HORIZON_S)
        return max(1, int(horizon_rows) // 2)

    def _policy_limits(self, now: float) -> Limits:
        st = self.st
        if st.policy is Policy.TIERS:
            return tier_limits(self.pool.count_due(now), st.tier_thresholds)
        if st.policy is Policy.ADAPTIVE:
            return Limits(self.limits.batch_limit, max(1, int(self.aimd.limit)))
        return self.limits

    def _adapt(self, saturated: bool) -> None:
        """Cron runs: one AIMD step per run (the continuous loop steps on its tick)."""
        if self.st.policy is not Policy.ADAPTIVE:
            return
        self.aimd = aimd_step(self.aimd, throttled=self.throttled_in_cycle, saturated=saturated)
        self.throttled_in_cycle = False

    def _controller_tick(self, now: float, *, saturated: bool) -> None:
        """The dispatcher's controller tick: probe the rate upward after a quiet second,
        and (adaptive) one AIMD step on the concurrency limit, growing by 10%."""
        elapsed = now - self.window_start
        observed = self.accepted_in_window / elapsed if elapsed > 0 else 0.0
        self.observed_rate = (
            observed if self.observed_rate is None else 0.5 * self.observed_rate + 0.5 * observed
        )
        self.accepted_in_window = 0
        self.window_start = now
        if self.client_step and self.rate_now < self.rate_ceiling and now - self.last_cut > 1.0:
            # Creep back up by 0.5% of the ceiling per second while nothing throttles.
            self.rate_now = min(
                self.rate_ceiling, self.rate_now + self.rate_ceiling * 0.005 * elapsed
            )
            self.client_step = 1 / self.rate_now
        if self.st.policy is Policy.ADAPTIVE:
            self.aimd = aimd_step(
                self.aimd,
                throttled=self.throttled_in_cycle,
                saturated=saturated,
                increase=max(1.0, self.aimd.limit * 0.1),
            )
            if int(self.aimd.limit) != len(self.slots):
                self._resize(max(1, int(self.aimd.limit)), now)
        self.throttled_in_cycle = False
        self.next_tick = now + CONTROLLER_INTERVAL_S

    def _cut_rate(self, now: float) -> None:
        """A throttle: the rate drops to just under what the API was seen to accept, or by
        30% with nothing observed yet, at most once a second (the dispatcher's
        RateController, mirrored)."""
        if now - self.last_cut < 1.0:
            return
        self.last_cut = now
        if self.observed_rate:
            target = min(self.rate_now, self.observed_rate) * 0.98
        else:
            target = self.rate_now * 0.7
        self.rate_now = max(self.rate_ceiling * 0.05, target)
        self.client_step = 1 / self.rate_now

    # -- schedules -----------------------------------------------------------------

    def run_cron(self) -> None:
        """Ticks every interval; a run fetches up to batch due rows and sends them with a
        fresh pLimit; a tick that finds the previous run still going is skipped."""
        st = self.st
        k_allowed = 0
        first = True
        while True:
            nd = self.pool.next_due()
            if nd is None:
                if first:  # the first tick still runs its query and finds nothing
                    self.empty_done = st.query_s
                    self.run_times.append(st.query_s)
                return
            first = False
            k = max(k_allowed, math.ceil(nd / st.interval_s - 1e-12))
            tick = k * st.interval_s
            limits = self._policy_limits(tick)
            rows = self.pool.take(tick, limits.batch_limit)
            begin = tick + st.query_s
            self.slots = [begin] * limits.concurrency
            self.max_concurrency_used = max(self.max_concurrency_used, limits.concurrency)
            end = begin
            if st.waves:
                for w in range(0, len(rows), limits.concurrency):
                    wave_end = begin
                    for d, att in rows[w : w + limits.concurrency]:
                        _, finish = self._send(begin, d, att)
                        wave_end = max(wave_end, finish)
                    begin = end = wave_end
            else:
                for d, att in rows:
                    _, finish = self._send(begin, d, att)
                    end = max(end, finish)
            self.waves += math.ceil(len(rows) / limits.concurrency)
            self.runs += 1
            self.run_times.append(end - tick)
            self._adapt(saturated=len(rows) >= limits.concurrency)
            if st.policy is Policy.ADAPTIVE:
                self.limits = self._policy_limits(end)
            next_k = max(k + 1, math.ceil(end / st.interval_s - 1e-12))
            self.skipped += next_k - k - 1
            k_allowed = next_k

    def run_continuous(self) -> None:
        """The dispatcher's claimer: claim `claim_size` rows (a second of sending at the
        rate, at most the batch limit), send them with the concurrency limit and the rate
        limiter, claim again when the queue falls below its low-water mark (before it
        empties); when nothing more is due, sleep until the next due time."""
        st = self.st
        buffer: deque[tuple[float, float, int, int]] = deque()  # ready, due, attempts, claim
        claim_start: list[float] = []
        claim_end: list[float] = []
        trigger = 0.0
        first = True

        def pop_one() -> float:
            ready, d, att, c = buffer.popleft()
            start, finish = self._send(ready, d, att)
            if finish > claim_end[c]:
                claim_end[c] = finish
            return start

        while True:
            nd = self.pool.next_due()
            if nd is None:
                if not buffer:
                    if first:
                        self.empty_done = st.claim_overhead_s
                        self.run_times.append(st.claim_overhead_s)
                    break
                # Drain what is claimed; throttled sends may refill the pool.
                while buffer:
                    pop_one()
                continue
            first = False
            now = max(trigger, nd)
            # Rows queued earlier that have started by now are no longer queued.
            while buffer and self._peek_start(buffer[0][0]) <= now:
                pop_one()
            limits = self._policy_limits(now)
            if len(self.slots) != limits.concurrency:
                self._resize(limits.concurrency, now)
            want = self._claim_want(limits, len(buffer))
            rows = self.pool.take(now, want)
            ready = now + st.claim_overhead_s
            c = len(claim_start)
            claim_start.append(now)
            claim_end.append(ready)
            buffer.extend((ready, d, att, c) for d, att in rows)
            last_start = ready
            if len(rows) < want:
                # Everything due was taken: the claimer sleeps until the next due time
                # (or an enrollment wakes it), while the queue keeps sending.
                trigger = ready
                continue
            # More may be due: claim again as soon as the queue drops below the low-water
            # mark (before it empties), never while this claim is still in flight.
            low_water = self._low_water(limits)
            while len(buffer) >= low_water:
                last_start = pop_one()
            trigger = max(ready, last_start)
        self.runs = len(claim_start)
        self.run_times = [e - s for s, e in zip(claim_start, claim_end, strict=True)] or (
            self.run_times
        )

    # -- summary -------------------------------------------------------------------

    def _send_rate(self) -> float:
        span = self.last_sent_start - self.first_sent_start
        return (self.sent - 1) / span if self.sent > 1 and span > 0 else 0.0

    def result(self, latency_label: str, arrivals_label: str) -> SimResult:
        st = self.st
        lags = sorted(self.lags)
        drain = self.last_finish if self.sent else self.empty_done
        first_due = self.pool.due[0] if self.pool.due else 0.0
        span = drain - first_due
        capacity, binding = capacity_per_s(st, self.latency.mean_s)
        peak = peak_rate(sorted(self.starts))
        headroom = None
        if st.rate_per_s:
            headroom = 1 - peak / st.rate_per_s
        cron = st.effective_schedule == "cron"
        # The seed holds a database connection per in-flight send; dripline holds two
        # (one claiming, one recording) whatever its concurrency.
        connections = _max_limits(st, self.latency.mean_s).concurrency if cron else 2
        times = self.run_times
        return SimResult(
            settings=st,
            latency=latency_label,
            arrivals=arrivals_label,
            messages=self.messages,
            sent=self.sent,
            attempts=len(self.starts),
            throttled=self.throttled,
            runs=self.runs,
            skipped_runs=self.skipped,
            waves=self.waves,
            run_time_mean_s=sum(times) / len(times) if times else 0.0,
            run_time_max_s=max(times, default=0.0),
            drain_s=drain,
            throughput_per_s=self.sent / span if span > 0 and self.sent else 0.0,
            capacity_per_s=capacity,
            max_per_day=math.floor(capacity * _DAY_S + 1e-6),
            lag_p50_s=percentile(lags, 50),
            lag_p99_s=percentile(lags, 99),
            lag_max_s=lags[-1] if lags else 0.0,
            db_connections=connections,
            peak_send_rate_per_s=peak,
            rate_headroom=headroom,
            final_concurrency=len(self.slots),
            binding=binding,
            send_rate_per_s=self._send_rate(),
            run_times_s=tuple(times),
        )
