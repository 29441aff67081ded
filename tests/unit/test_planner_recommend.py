"""`recommend`: the smallest settings the simulation confirms meet the target."""

from __future__ import annotations

from dataclasses import replace

from dripline.planner import LatencyModel, recommend, simulate
from dripline.planner.parse import parse_profile


def test_recommendation_meets_the_target_and_is_minimal() -> None:
    load = parse_profile("5000/h spike 10x 10m")
    lat = LatencyModel.lognormal(0.15, 0.6)
    rec = recommend(target_lag_s=60, arrivals=load, api_rate_per_s=80, latency=lat)
    assert rec.feasible
    st = rec.settings
    again = simulate(st, lat, load)
    assert again.sent == again.messages
    assert again.lag_p99_s <= 60
    assert st.rate_per_s is not None and st.rate_per_s <= 80
    # One less of the rate breaks the target (with concurrency and batch generous).
    slower = replace(st, rate_per_s=st.rate_per_s - 1, concurrency=200, batch_limit=400)
    assert simulate(slower, lat, load).lag_p99_s > 60
    # One less concurrency breaks it too.
    if st.concurrency > 1:
        assert simulate(replace(st, concurrency=st.concurrency - 1), lat, load).lag_p99_s > 60
    assert rec.binding
    assert any("Little's law" in r for r in rec.reasons)
    # The seed's design is hours behind on the same load.
    assert rec.baseline.lag_p99_s > 3600


def test_infeasible_when_the_api_limit_is_too_low() -> None:
    load = parse_profile("500/m for 10m")  # 8.3/s
    rec = recommend(
        target_lag_s=5, arrivals=load, api_rate_per_s=4, latency=LatencyModel.constant(0.15)
    )
    assert not rec.feasible
    assert rec.binding == "rate limit"
    assert "1,000/s" in rec.reasons[0]
