"""One simulated world, drawn from a seed: how many workers, what the API and the
webhook channel do wrong, which processes crash and when, how users behave.

Every choice comes from `random.Random(seed)`, so a seed names a whole run. `draw`
varies the fault mix from seed to seed (most seeds exercise a few faults hard rather
than every fault a little), and the runner checks the invariants whatever was drawn.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Crash", "Outage", "SimConfig", "Stall", "draw"]


@dataclass(frozen=True, slots=True)
class Crash:
    """Process `target` (a worker index, or -1 for the server) dies at `at_s` and, unless
    `restart_after_s` is None, comes back that much later."""

    target: int
    at_s: float
    restart_after_s: float | None


@dataclass(frozen=True, slots=True)
class Outage:
    """The database refuses every call from `start_s` for `duration_s`."""

    start_s: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class Stall:
    """Worker `worker`'s database calls hang from `start_s` for `duration_s` (a long GC
    pause or a network partition): its leases lapse while it still holds claims."""

    worker: int
    start_s: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int
    workers: int = 2
    conversations: int = 24
    late_enrollments: int = 6  # enrolled while the run is under way
    phones: int = 20  # fewer phones than conversations: some users are in two flows
    fault_end_s: float = 60.0  # no new faults after this; the run then settles
    max_time_s: float = 900.0  # a run that has not settled by now is a failure
    # dripline's settings for the run (scaled down so leases and windows are reachable)
    rate_per_s: float = 20.0
    concurrency: int = 8
    batch_limit: int = 16
    lease_ttl_s: float = 6.0
    heartbeat_s: float = 1.0
    unknown_after_s: float = 10.0
    max_attempts: int = 5
    pair_interval_s: float = 0.5
    read_timeout_s: float = 3.0
    # the Cloud API
    api_rate_per_s: float = 20.0  # Meta's throughput for the number
    latency_mean_s: float = 0.15
    p_connect_refused: float = 0.0  # before the request is written: maybe_sent False
    p_drop_before_accept: float = 0.0  # written, then the connection drops, not accepted
    p_lost_response: float = 0.0  # accepted, then the connection drops
    p_timeout_after_accept: float = 0.0  # accepted, the answer never comes
    p_error_json: float = 0.0  # HTTP 500 with Meta's error body (131000), not accepted
    p_bare_5xx: float = 0.0  # HTTP 502/503 with no body, not accepted
    p_undeliverable: float = 0.0  # users whose messages fail 131026 by webhook
    # The 24-hour window, scaled down: text to a user who has not written within
    # window_s is accepted and then failed 131047 by webhook, or refused at once with
    # probability p_window_sync (Meta does both).
    window_s: float = 30.0
    p_window_sync: float = 0.0
    p_async_transient: float = 0.0  # accepted, then failed 131000 by webhook (retryable)
    # the webhook channel (Meta -> our server)
    status_delay_s: float = 0.5
    p_webhook_dup: float = 0.0
    p_webhook_reorder: float = 0.0
    p_webhook_lost: float = 0.0  # a POST fails; Meta redelivers later
    webhook_batch_max: int = 20
    statuses: bool = True  # False: no status webhooks at all (a misconfigured app)
    # the inbox processor
    processor_delay_s: float = 0.0  # extra time per batch (a slow processor)
    # users
    p_reply: float = 0.7
    p_stop: float = 0.1
    reply_delay_s: float = 3.0
    # faults
    crashes: tuple[Crash, ...] = ()
    outages: tuple[Outage, ...] = ()
    stalls: tuple[Stall, ...] = ()
    store_latency_s: float = 0.002
    # a webhook transaction's commit refused for a retry (a deadlock, a serialization
    # failure, a statement timeout)
    p_tx_refused: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> SimConfig:
        return dataclasses.replace(self, **changes)


def _maybe(rng: random.Random, p_on: float, low: float, high: float) -> float:
    return rng.uniform(low, high) if rng.random() < p_on else 0.0


def draw(seed: int) -> SimConfig:
    """The world for `seed`."""
    rng = random.Random(f"dripline-sim-{seed}")
    workers = rng.choice((1, 2, 2, 3))
    fault_end = 60.0
    crashes: list[Crash] = []
    for _ in range(rng.choice((0, 0, 1, 2, 3))):
        target = rng.randrange(-1, workers)
        restart = None if rng.random() < 0.2 else rng.uniform(0.5, 15.0)
        crashes.append(Crash(target, rng.uniform(0.5, fault_end), restart))
    outages = tuple(
        Outage(rng.uniform(0, fault_end), rng.uniform(0.2, 8.0))
        for _ in range(rng.choice((0, 0, 0, 1, 2)))
    )
    stalls = tuple(
        Stall(rng.randrange(workers), rng.uniform(0, fault_end), rng.uniform(2.0, 15.0))
        for _ in range(rng.choice((0, 0, 0, 1)))
    )
    cfg = SimConfig(
        seed=seed,
        workers=workers,
        conversations=rng.randint(8, 40),
        late_enrollments=rng.randint(0, 10),
        phones=rng.randint(6, 40),
        concurrency=rng.choice((2, 8, 16)),
        batch_limit=rng.choice((4, 16, 64)),
        rate_per_s=rng.choice((5.0, 20.0, 50.0)),
        api_rate_per_s=rng.choice((5.0, 20.0, 50.0)),
        latency_mean_s=rng.choice((0.02, 0.15, 0.6)),
        unknown_after_s=rng.choice((5.0, 10.0, 20.0)),
        p_connect_refused=_maybe(rng, 0.3, 0.0, 0.1),
        p_drop_before_accept=_maybe(rng, 0.3, 0.0, 0.05),
        p_lost_response=_maybe(rng, 0.3, 0.0, 0.05),
        p_timeout_after_accept=_maybe(rng, 0.3, 0.0, 0.05),
        p_error_json=_maybe(rng, 0.3, 0.0, 0.1),
        p_bare_5xx=_maybe(rng, 0.3, 0.0, 0.05),
        p_undeliverable=_maybe(rng, 0.2, 0.0, 0.2),
        status_delay_s=rng.choice((0.1, 0.5, 3.0)),
        p_webhook_dup=_maybe(rng, 0.3, 0.0, 0.3),
        p_webhook_reorder=_maybe(rng, 0.3, 0.0, 0.3),
        p_webhook_lost=_maybe(rng, 0.3, 0.0, 0.3),
        webhook_batch_max=rng.choice((1, 5, 20, 100)),
        statuses=rng.random() > 0.05,
        processor_delay_s=_maybe(rng, 0.2, 0.0, 5.0),
        p_reply=rng.uniform(0.2, 0.95),
        p_stop=_maybe(rng, 0.6, 0.0, 0.3),
        reply_delay_s=rng.choice((0.2, 3.0, 20.0)),
        crashes=tuple(sorted(crashes, key=lambda c: c.at_s)),
        outages=outages,
        stalls=stalls,
        # From its own generator: the draws above (and the worlds of kept seeds) stay.
        p_tx_refused=_maybe(random.Random(f"dripline-sim-refusals-{seed}"), 0.3, 0.0, 0.3),
    )
    # Drawn last, so the worlds above stay what they were for each seed.
    return cfg.replace(
        window_s=rng.choice((8.0, 30.0, 120.0)),
        p_window_sync=rng.choice((0.0, 0.0, 0.5, 1.0)),
        p_async_transient=_maybe(rng, 0.2, 0.0, 0.1),
    )
