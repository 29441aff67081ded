from hypothesis import given
from hypothesis import strategies as st

from dripline.dispatcher.policies import (
    SEED_CRON,
    AimdState,
    Limits,
    aimd_step,
    claim_size,
    concurrency_for_rate,
    initial_limits,
    tier_limits,
)
from dripline.settings import Policy


def test_tiers_follow_the_seed_guide() -> None:
    assert tier_limits(101) == Limits(50, 10)
    assert tier_limits(100) == Limits(40, 7)
    assert tier_limits(51) == Limits(40, 7)
    assert tier_limits(50) == Limits(30, 5)
    assert tier_limits(10) == Limits(30, 5)
    assert tier_limits(9) == Limits(20, 3)
    assert tier_limits(0) == Limits(20, 3)


def test_tier_thresholds_are_configurable() -> None:
    assert tier_limits(11, (10, 5, 2)) == Limits(50, 10)
    assert tier_limits(1, (10, 5, 2)) == Limits(20, 3)


def test_initial_limits() -> None:
    assert initial_limits(Policy.SEED_CRON, 500, 100) == SEED_CRON == Limits(30, 5)
    assert initial_limits(Policy.STATIC, 500, 100) == Limits(500, 100)
    assert initial_limits(Policy.TIERS, 500, 100) == Limits(30, 5)


def test_concurrency_for_rate_is_littles_law_with_headroom() -> None:
    assert concurrency_for_rate(1000, 0.15, headroom=1.0) == 150
    assert concurrency_for_rate(80, 0.15) == 18
    assert concurrency_for_rate(0.1, 0.01) == 1


def test_claim_size_fills_the_horizon_minus_the_queue() -> None:
    assert claim_size(200, 80, 1.0, 0) == 80
    assert claim_size(200, 80, 1.0, 50) == 30
    assert claim_size(200, 80, 1.0, 100) == 0
    assert claim_size(50, 1000, 1.0, 0) == 50


def test_aimd_decreases_on_throttle_and_grows_when_saturated() -> None:
    s = AimdState(limit=100, floor=2, ceiling=200)
    assert aimd_step(s, throttled=True).limit == 70
    assert aimd_step(s, throttled=False).limit == 101
    assert aimd_step(s, throttled=False, saturated=False).limit == 100
    assert aimd_step(s, throttled=False, latency_ratio=3.0).limit == 70


@given(
    limit=st.floats(1, 500),
    throttled=st.booleans(),
    saturated=st.booleans(),
    ratio=st.floats(0, 10),
)
def test_aimd_stays_in_bounds(limit: float, throttled: bool, saturated: bool, ratio: float) -> None:
    s = AimdState(limit=limit, floor=1, ceiling=500)
    out = aimd_step(s, throttled=throttled, saturated=saturated, latency_ratio=ratio)
    assert 1 <= out.limit <= 500
