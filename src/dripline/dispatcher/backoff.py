"""Retry delays: exponential with full jitter, and Meta's 4^X pair-limit schedule."""

from __future__ import annotations

import random

__all__ = ["full_jitter", "pair_backoff_s", "throttle_backoff_s"]


def full_jitter(
    attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """A delay drawn uniformly from [0, min(cap, base * 2^attempt)] (AWS 'full jitter').

    Jitter spreads the retries of a failed batch so they do not return as one burst.
    """
    ceiling = min(cap_s, base_s * (2.0 ** max(0, attempt)))
    return (rng or random).uniform(0.0, ceiling)


def throttle_backoff_s(
    streak: int,
    retry_after_s: float | None,
    base_s: float = 0.5,
    cap_s: float = 30.0,
    rng: random.Random | None = None,
) -> float:
    """How long to hold sending after a throttle: Retry-After when given, else jittered
    exponential in the number of throttles seen in a row."""
    if retry_after_s is not None and retry_after_s >= 0:
        return min(retry_after_s, cap_s * 10)
    # Never below a small floor: an immediate retry would hit the same empty bucket.
    return max(0.05, full_jitter(streak, base_s, cap_s, rng))


def pair_backoff_s(hits: int, cap_s: float = 1024.0) -> float:
    """Meta's advice after the pair rate limit: wait 4^X seconds, X = 0, 1, 2, ..."""
    return min(cap_s, 4.0 ** max(0, hits))
