"""`dripline plan --recommend`: the smallest continuous-dispatcher settings that keep
the p99 schedule lag under a target for a load, found by simulating candidates.

The search goes one knob at a time, each with the others generous, because each knob
caps throughput on its own (the dispatcher sends at most min(rate, concurrency /
latency, batch per claim) messages a second):

1. rate: the smallest messages/s (up to the API's limit) that meets the target;
2. concurrency: the smallest in-flight limit that lets that rate through (Little's law
   says about rate x latency; latency spread needs a little more);
3. batch: the smallest claim that keeps the pipe full, but at least the concurrency
   (one claim fills every slot) and big enough to keep claims under
   `max_claims_per_s` (each claim is a database round trip).

Lag under a target is monotone in each knob (more capacity never adds lag in this
model), so each step is a binary search.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dripline.planner.cpu import CpuBudget
from dripline.planner.model import Arrivals, LatencyModel, PlanSettings, SimResult
from dripline.planner.simulate import simulate
from dripline.settings import Policy

__all__ = ["Recommendation", "recommend"]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The chosen settings, the simulation that confirms them, and why."""

    feasible: bool
    settings: PlanSettings
    result: SimResult
    target_lag_s: float
    api_rate_per_s: float
    peak_arrival_per_s: float
    binding: str
    reasons: tuple[str, ...]
    baseline: SimResult

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "feasible": self.feasible,
            "batch": self.settings.batch_limit,
            "concurrency": self.settings.concurrency,
            "rate_per_s": self.settings.rate_per_s,
            "target_lag_s": self.target_lag_s,
            "api_rate_per_s": self.api_rate_per_s,
            "peak_arrival_per_s": self.peak_arrival_per_s,
            "binding": self.binding,
            "reasons": list(self.reasons),
            "result": self.result.to_dict(),
            "seed_cron_baseline": self.baseline.to_dict(),
        }


def _smallest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """Smallest n in [lo, hi] with ok(n), assuming ok is monotone; None if ok(hi) fails."""
    if lo > hi or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def recommend(
    *,
    target_lag_s: float,
    arrivals: Arrivals,
    api_rate_per_s: float,
    latency: LatencyModel,
    claim_overhead_s: float = 0.005,
    max_claims_per_s: float = 10.0,
    max_concurrency: int = 5_000,
    seed: int = 0,
    cpu: CpuBudget | None = None,
) -> Recommendation:
    """Find the smallest (rate, concurrency, batch) whose simulated p99 lag for
    `arrivals` is at most `target_lag_s`, with every message sent (every candidate
    bounded by `cpu` too, when given)."""
    base = PlanSettings(
        policy=Policy.STATIC,
        rate_per_s=api_rate_per_s,
        claim_overhead_s=claim_overhead_s,
        max_concurrency=max_concurrency,
        cpu=cpu,
    )
    cache: dict[tuple[float, int, int], SimResult] = {}

    def run(rate: float, conc: int, batch: int) -> SimResult:
        key = (rate, conc, batch)
        if key not in cache:
            st = replace(base, rate_per_s=rate, concurrency=conc, batch_limit=batch)
            cache[key] = simulate(st, latency, arrivals, seed=seed)
        return cache[key]

    def meets(r: SimResult) -> bool:
        return r.sent == r.messages and r.lag_p99_s <= target_lag_s

    def roomy_conc(rate: float) -> int:
        # Enough slots that concurrency never binds: rate x p99 latency, doubled.
        return min(max_concurrency, max(1, math.ceil(rate * latency.p99_s * 2)))

    def roomy_batch(rate: float, conc: int) -> int:
        return max(conc * 2, math.ceil(rate), 1)

    def min_batch(rate: float, conc: int) -> int:
        return max(conc, math.ceil(rate / max_claims_per_s), 1)

    peak = arrivals.peak_rate_per_s
    reasons: list[str] = []
    api_max = max(1, math.floor(api_rate_per_s))
    rate = _smallest(
        1, api_max, lambda r: meets(run(r, roomy_conc(r), roomy_batch(r, roomy_conc(r))))
    )
    baseline = simulate(
        PlanSettings(policy=Policy.SEED_CRON, rate_per_s=api_rate_per_s), latency, arrivals
    )
    if rate is None:
        conc = roomy_conc(api_max)
        batch = roomy_batch(api_max, conc)
        result = run(api_max, conc, batch)
        cpu_binds = cpu.binding() if cpu and cpu.limit_per_s() < api_rate_per_s else ""
        if cpu_binds and cpu is not None:
            reasons.append(
                f"infeasible: the CPU pays for {cpu.limit_per_s():.0f}/s ({cpu.describe()}) "
                f"and the p99 lag is {result.lag_p99_s:.1f} s > {target_lag_s:g} s; the "
                f"peak of {peak:.1f}/s needs more cores, more workers, less CPU per "
                "message, or a longer lag target"
            )
        else:
            reasons.append(
                f"infeasible: even at the API's full {api_rate_per_s:g}/s the p99 lag is "
                f"{result.lag_p99_s:.1f} s > {target_lag_s:g} s; the peak of {peak:.1f}/s "
                "needs a higher API limit (an upgraded number allows 1,000/s), more sender "
                "numbers, or a longer lag target"
            )
        st = replace(base, rate_per_s=float(api_max), concurrency=conc, batch_limit=batch)
        return Recommendation(
            False,
            st,
            result,
            target_lag_s,
            api_rate_per_s,
            peak,
            cpu.binding()
            if cpu is not None and cpu.limit_per_s() < api_rate_per_s
            else "rate limit",
            tuple(reasons),
            baseline,
        )
    found_conc = _smallest(1, roomy_conc(rate), lambda c: meets(run(rate, c, roomy_batch(rate, c))))
    # roomy_conc passed in the rate search, so None only if the model is not monotone.
    conc = found_conc if found_conc is not None else roomy_conc(rate)
    batch_lo = min_batch(rate, conc)
    batch_hi = max(batch_lo, roomy_batch(rate, conc))
    found_batch = _smallest(batch_lo, batch_hi, lambda b: meets(run(rate, conc, b)))
    batch = found_batch if found_batch is not None else batch_hi
    result = run(rate, conc, batch)
    st = replace(base, rate_per_s=float(rate), concurrency=conc, batch_limit=batch)

    by_conc = conc / latency.mean_s
    by_batch = batch / claim_overhead_s
    terms = {"rate": float(rate), "concurrency / latency": by_conc, "batch / claim": by_batch}
    if cpu is not None:
        terms["CPU"] = cpu.limit_per_s()
    # Caps within 10% of the lowest bind together: lowering either breaks the target.
    low = min(terms.values())
    binding = " and ".join(k for k, v in terms.items() if v <= low * 1.1)
    below = rate - 1
    reasons.append(
        f"rate {rate}/s: the peak arrival rate is {peak:.1f}/s"
        + (
            f"; at {below}/s the p99 lag would be {run(below, roomy_conc(below), roomy_batch(below, roomy_conc(below))).lag_p99_s:.1f} s"  # noqa: E501
            if below >= 1
            else ""
        )
        + f" (the API allows {api_rate_per_s:g}/s: {api_rate_per_s - rate:g}/s headroom)"
    )
    reasons.append(
        f"concurrency {conc}: Little's law, rate x mean latency = {rate} x "
        f"{latency.mean_s * 1000:.0f} ms = {rate * latency.mean_s:.1f} in flight on average"
        + (
            f"; {conc - 1} would give p99 lag {run(rate, conc - 1, roomy_batch(rate, conc - 1)).lag_p99_s:.1f} s"  # noqa: E501
            if conc > 1
            else ""
        )
    )
    reasons.append(
        f"batch {batch}: at least the concurrency (one claim fills every slot) and "
        f"rate / {max_claims_per_s:g} claims/s = {math.ceil(rate / max_claims_per_s)}"
    )
    reasons.append(
        f"binding: {binding} (throughput caps: rate {rate}/s, concurrency/latency "
        f"{by_conc:.0f}/s, batch/claim {by_batch:.0f}/s)"
    )
    return Recommendation(
        True, st, result, target_lag_s, api_rate_per_s, peak, binding, tuple(reasons), baseline
    )
