"""Tuning policies as pure functions: the dispatcher and the planner share them.

- static: batch and concurrency as configured;
- tiers: the seed guide's "Dynamic Tuning Strategy" (backlog > 100 -> 50/10,
  > 50 -> 40/7, < 10 -> 20/3, else 30/5), thresholds configurable;
- adaptive: AIMD on the concurrency limit, driven by throttle errors and latency;
- seed-cron: the seed's design (every 300 s, batch 30, concurrency 5), kept as a
  baseline for side-by-side comparison only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dripline.dispatcher.constants import CLAIM_HORIZON_MIN_S, CLAIM_HORIZON_S
from dripline.settings import Policy

__all__ = [
    "SEED_CRON",
    "AimdState",
    "Limits",
    "aimd_step",
    "claim_horizon",
    "claim_size",
    "concurrency_for_rate",
    "initial_limits",
    "tier_limits",
]


@dataclass(frozen=True, slots=True)
class Limits:
    batch_limit: int
    concurrency: int


# The seed's fixed design: getScheduledQuestionsDue(30), pLimit(5), every 5 minutes.
SEED_CRON = Limits(batch_limit=30, concurrency=5)
SEED_CRON_INTERVAL_S = 300.0


def tier_limits(backlog: int, thresholds: tuple[int, int, int] = (100, 50, 10)) -> Limits:
    """The seed's dynamic tiers for a backlog (count of due rows)."""
    high, moderate, low = thresholds
    if backlog > high:
        return Limits(50, 10)
    if backlog > moderate:
        return Limits(40, 7)
    if backlog < low:
        return Limits(20, 3)
    return Limits(30, 5)


def initial_limits(policy: Policy, batch_limit: int, concurrency: int) -> Limits:
    """The limits a policy starts with."""
    if policy is Policy.SEED_CRON:
        return SEED_CRON
    if policy is Policy.TIERS:
        return Limits(30, 5)
    return Limits(batch_limit, concurrency)


def concurrency_for_rate(rate_per_s: float, latency_s: float, headroom: float = 1.5) -> int:
    """Concurrency needed to sustain `rate_per_s` at `latency_s` (Little's law), padded."""
    return max(1, math.ceil(rate_per_s * latency_s * headroom))


def claim_horizon(
    workers: int, horizon_s: float = CLAIM_HORIZON_S, floor_s: float = CLAIM_HORIZON_MIN_S
) -> float:
    """Seconds of sending at this worker's rate share that its claims keep queued.

    Alone, `horizon_s`. One of several workers divides it between them: when a backlog
    runs out, what one worker still has queued is work the others, idle by then,
    cannot take, and it is sent at that worker's share alone. With 2 workers and 1 s
    queued the run's end took up to 0.5 s longer than it needed (issue 14, scenario 11).
    Each worker then claims more often, in smaller claims (at 1,000/s over 2 workers,
    4 claims a second each instead of 2); `floor_s` keeps a claim worth its fixed cost.
    """
    if workers <= 1:
        return horizon_s
    return max(min(floor_s, horizon_s), horizon_s / workers)


def claim_size(batch_limit: int, rate_per_s: float, horizon_s: float, queued: int) -> int:
    """How many rows to claim now: enough for `horizon_s` of sending at the rate limit,
    minus what is already queued, never above `batch_limit`.

    Claiming much more than the rate can send within the horizon only holds leases (and
    memory) for rows that will wait; claiming less starves the pipe.
    """
    want = math.ceil(rate_per_s * horizon_s) - queued
    return max(0, min(batch_limit, want))


@dataclass(frozen=True, slots=True)
class AimdState:
    limit: float
    floor: int = 1
    ceiling: int = 512


def aimd_step(
    state: AimdState,
    *,
    throttled: bool,
    latency_ratio: float = 1.0,
    saturated: bool = True,
    increase: float = 1.0,
    decrease: float = 0.7,
    latency_tolerance: float = 2.0,
) -> AimdState:
    """One adjustment of an AIMD concurrency limit.

    Throttled, or latency above `latency_tolerance` x its baseline: multiply by
    `decrease`. Otherwise, and only while the limit is actually used (`saturated`),
    add `increase`. Always within [floor, ceiling].
    """
    if throttled or latency_ratio > latency_tolerance:
        limit = state.limit * decrease
    elif saturated:
        limit = state.limit + increase
    else:
        limit = state.limit
    limit = min(float(state.ceiling), max(float(state.floor), limit))
    return AimdState(limit=limit, floor=state.floor, ceiling=state.ceiling)
