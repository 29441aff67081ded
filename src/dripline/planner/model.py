"""The planner's inputs and output: settings, a latency model, arrivals, a result.

All pure data. Randomness comes from a `random.Random` the caller seeds, so a
simulation is a deterministic function of (settings, latency, arrivals, seed).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Literal

from dripline.planner.cpu import CpuBudget
from dripline.settings import Policy

__all__ = [
    "Arrivals",
    "LatencyModel",
    "PlanSettings",
    "Schedule",
    "SimResult",
]

Schedule = Literal["cron", "continuous"]

# z for the 99th percentile of a standard normal: ties a lognormal's p99 to its sigma.
_Z99 = NormalDist().inv_cdf(0.99)


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """One dispatcher configuration to simulate.

    `rate_per_s` is the API's per-number limit: the continuous policies also enforce it
    client side (a token bucket); `seed-cron` has no limiter (the seed sends as fast as
    pLimit lets it), so there it only measures headroom. `server_rate_per_s` models an
    API that throttles below the configured rate (None: the API never throttles).
    """

    policy: Policy = Policy.STATIC
    batch_limit: int = 30
    concurrency: int = 5
    rate_per_s: float | None = 80.0
    interval_s: float = 300.0
    # One due query on a cron run (the guide: "~50-100ms").
    query_s: float = 0.1
    # One claim round trip of the continuous dispatcher (pipelined, so mostly hidden).
    claim_overhead_s: float = 0.005
    # None: the policy's natural schedule (seed-cron and tiers: cron; others: continuous).
    schedule: Schedule | None = None
    max_concurrency: int = 512
    server_rate_per_s: float | None = None
    # The API's bucket holds about a second of its rate, so short bursts pass.
    server_burst_s: float = 1.0
    tier_thresholds: tuple[int, int, int] = (100, 50, 10)
    # Token-bucket capacity in messages; 1 = strict pacing at `rate_per_s`.
    burst: float = 1.0
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    # Model the seed guide's arithmetic (a wave of `concurrency` sends must all finish
    # before the next starts) instead of pLimit. Only for showing how the two differ.
    waves: bool = False
    # CPU per message and the cores paying for it (`planner/cpu.py`); None: CPU is free,
    # as in every plan before the CPU term (no bound unless one is given).
    cpu: CpuBudget | None = None

    @property
    def effective_schedule(self) -> Schedule:
        """The schedule actually simulated."""
        if self.schedule is not None:
            return self.schedule
        return "cron" if self.policy in (Policy.SEED_CRON, Policy.TIERS) else "continuous"

    @property
    def client_rate_limited(self) -> bool:
        """Whether sends are paced client side (the seed's design is not)."""
        return self.rate_per_s is not None and self.policy is not Policy.SEED_CRON

    def label(self) -> str:
        """Short human name, e.g. `static 200/64 @80/s`."""
        rate = f" @{self.rate_per_s:g}/s" if self.client_rate_limited else ""
        sched = f" {self.effective_schedule}" if self.policy is Policy.TIERS else ""
        cpu = f" cpu {self.cpu.limit_per_s():.0f}/s" if self.cpu is not None else ""
        return f"{self.policy.value}{sched} {self.batch_limit}/{self.concurrency}{rate}{cpu}"


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Per-message send latency: constant, lognormal (mean and p99), or samples."""

    kind: Literal["constant", "lognormal", "samples"]
    mean_s: float
    p99_s: float
    samples_s: tuple[float, ...] = ()
    source: str = ""

    @classmethod
    def constant(cls, seconds: float) -> LatencyModel:
        """Every send takes exactly `seconds`."""
        if not seconds > 0:
            raise ValueError("latency must be positive")
        return cls("constant", seconds, seconds)

    @classmethod
    def lognormal(cls, mean_s: float, p99_s: float) -> LatencyModel:
        """A lognormal with this mean and 99th percentile (p99 between mean and ~14.9x)."""
        _lognormal_params(mean_s, p99_s)  # validates
        return cls("lognormal", mean_s, p99_s)

    @classmethod
    def from_samples(cls, samples_s: Sequence[float], source: str = "") -> LatencyModel:
        """Resample measured latencies (seconds) uniformly."""
        clean = tuple(sorted(s for s in samples_s if s > 0))
        if not clean:
            raise ValueError("no positive latency samples")
        p99 = clean[min(len(clean) - 1, math.ceil(0.99 * len(clean)) - 1)]
        return cls("samples", sum(clean) / len(clean), p99, clean, source)

    def sampler(self, rng: random.Random) -> Callable[[], float]:
        """A function drawing one latency (seconds) per call from `rng`."""
        if self.kind == "constant":
            value = self.mean_s
            return lambda: value
        if self.kind == "lognormal":
            mu, sigma = _lognormal_params(self.mean_s, self.p99_s)
            draw = rng.lognormvariate
            return lambda: draw(mu, sigma)
        samples = self.samples_s
        choice = rng.choice
        return lambda: choice(samples)

    def describe(self) -> str:
        """E.g. `2.5 s`, `lognormal mean 150 ms p99 600 ms`, `db (1,234 samples)`."""
        if self.kind == "constant":
            return _fmt_s(self.mean_s)
        if self.kind == "lognormal":
            return f"lognormal mean {_fmt_s(self.mean_s)} p99 {_fmt_s(self.p99_s)}"
        where = f"{self.source} " if self.source else ""
        return (
            f"{where}({len(self.samples_s):,} samples, mean {_fmt_s(self.mean_s)}, "
            f"p99 {_fmt_s(self.p99_s)})"
        )


def _lognormal_params(mean_s: float, p99_s: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal with this mean and p99.

    mean = exp(mu + s^2/2) and p99 = exp(mu + z s), so ln(p99/mean) = z s - s^2/2:
    the smaller root of that quadratic is the sigma (the larger one is a different,
    heavier-tailed distribution with the same two numbers).
    """
    if not (mean_s > 0 and p99_s > mean_s):
        raise ValueError("lognormal needs 0 < mean < p99")
    d = math.log(p99_s / mean_s)
    disc = _Z99 * _Z99 - 2 * d
    if disc < 0:
        raise ValueError(f"p99 at most {math.exp(_Z99 * _Z99 / 2):.1f}x the mean for a lognormal")
    sigma = _Z99 - math.sqrt(disc)
    return math.log(mean_s) - sigma * sigma / 2, sigma


@dataclass(frozen=True, slots=True)
class Arrivals:
    """When messages fall due.

    - `backlog`: `count` messages all due at t=0;
    - `rate`: a Poisson stream of `rate_per_s` for `duration_s`, optionally multiplied by
      `spike_factor` for `spike_s` starting at `spike_at_s` (default: mid-way);
    - `typical-day` / `spike-day`: the guide's "Real-World Scenarios" (0-5 due per 5-minute
      run, rarely 10+; a spike day adds 75 due for the noon run, "50+").
    """

    kind: Literal["backlog", "rate", "typical-day", "spike-day"]
    count: int = 0
    rate_per_s: float = 0.0
    duration_s: float = 3600.0
    spike_factor: float = 1.0
    spike_s: float = 0.0
    spike_at_s: float | None = None
    label: str = ""

    @classmethod
    def backlog(cls, count: int) -> Arrivals:
        """`count` messages due at t=0."""
        if count < 0:
            raise ValueError("backlog must be >= 0")
        return cls("backlog", count=count, label=f"{count:,} due")

    @property
    def peak_rate_per_s(self) -> float:
        """The highest arrival rate in the profile (0 for a backlog)."""
        if self.kind == "rate":
            return self.rate_per_s * max(1.0, self.spike_factor if self.spike_s > 0 else 1.0)
        if self.kind == "typical-day":
            return 14 / 300
        if self.kind == "spike-day":
            return _SPIKE_DAY_EXTRA / 300
        return 0.0

    def spike_window(self) -> tuple[float, float] | None:
        """(start, end) of the spike in seconds, if any."""
        if self.kind != "rate" or self.spike_s <= 0 or self.spike_factor == 1.0:
            return None
        start = (
            self.spike_at_s if self.spike_at_s is not None else (self.duration_s - self.spike_s) / 2
        )
        return start, start + self.spike_s

    def due_times(self, rng: random.Random) -> list[float]:
        """Sorted due times in seconds from t=0."""
        if self.kind == "backlog":
            return [0.0] * self.count
        if self.kind == "rate":
            return self._poisson(rng)
        return _guide_day(rng, spike=self.kind == "spike-day")

    def _poisson(self, rng: random.Random) -> list[float]:
        window = self.spike_window()
        out: list[float] = []
        # Piecewise-constant rate: draw each segment as its own Poisson stream.
        segments: list[tuple[float, float, float]] = []
        if window is None:
            segments.append((0.0, self.duration_s, self.rate_per_s))
        else:
            a, b = max(0.0, window[0]), min(self.duration_s, window[1])
            segments += [(0.0, a, self.rate_per_s), (a, b, self.rate_per_s * self.spike_factor)]
            segments.append((b, self.duration_s, self.rate_per_s))
        for start, end, rate in segments:
            if rate <= 0 or end <= start:
                continue
            t = start + rng.expovariate(rate)
            while t < end:
                out.append(t)
                t += rng.expovariate(rate)
        return out


_DAY_S = 86_400.0
_RUN_S = 300.0
# The guide's "Typical Day": most runs 0-2 messages, occasional 3-5, rare 10+.
_TYPICAL_WEIGHTS: tuple[tuple[int, float], ...] = (
    (0, 0.35),
    (1, 0.25),
    (2, 0.17),
    (3, 0.09),
    (4, 0.05),
    (5, 0.05),
    (10, 0.02),
    (12, 0.01),
    (14, 0.01),
)
_SPIKE_DAY_EXTRA = 75  # "Spike Day (50+ messages)": one run with 75 more due


def _guide_day(rng: random.Random, *, spike: bool) -> list[float]:
    counts = [c for c, _ in _TYPICAL_WEIGHTS]
    weights = [w for _, w in _TYPICAL_WEIGHTS]
    out: list[float] = []
    for window in range(int(_DAY_S // _RUN_S)):
        start = window * _RUN_S
        n = rng.choices(counts, weights)[0]
        if spike and start == _DAY_S / 2 - _RUN_S:
            n += _SPIKE_DAY_EXTRA
        out.extend(start + rng.random() * _RUN_S for _ in range(n))
    out.sort()
    return out


@dataclass(frozen=True, slots=True)
class SimResult:
    """What one simulated configuration did with one load.

    Times are seconds from t=0 (when the first backlog is due). `drain_s` is when the
    last message was sent (its send finished); with nothing to send, when the first
    (empty) query finished. Lag is send start minus due time.

    `throughput_per_s` is sent / (drain - first due): it counts the last send's latency.
    `send_rate_per_s` is (sent - 1) / (last send start - first send start): the rate at
    which sends leave, which is what the benchmarks measure at the API (first to last
    arrival), so compare a measured run with this one.
    """

    settings: PlanSettings
    latency: str
    arrivals: str
    messages: int
    sent: int
    attempts: int
    throttled: int
    runs: int
    skipped_runs: int
    waves: int
    run_time_mean_s: float
    run_time_max_s: float
    drain_s: float
    throughput_per_s: float
    capacity_per_s: float
    max_per_day: int
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float
    db_connections: int
    peak_send_rate_per_s: float
    rate_headroom: float | None
    final_concurrency: int
    binding: str
    send_rate_per_s: float = 0.0
    run_times_s: tuple[float, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (run times left out: they can be long)."""
        data = asdict(self)
        data.pop("run_times_s")
        s = data.pop("settings")
        s["policy"] = self.settings.policy.value
        s["schedule"] = self.settings.effective_schedule
        s["tier_thresholds"] = list(self.settings.tier_thresholds)
        return {"settings": s, **data}


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s"
