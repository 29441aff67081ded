"""Parsing the planner's options: accepted forms and one-line errors naming the option."""

from __future__ import annotations

import random

import pytest

from dripline.errors import InputError
from dripline.planner import LatencyModel, percentile
from dripline.planner.parse import (
    DbLatency,
    parse_duration,
    parse_int_list,
    parse_latency,
    parse_profile,
    parse_rate,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("150ms", 0.15), ("2.5s", 2.5), ("5m", 300), ("1h", 3600), ("300", 300), ("1d", 86400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--x") == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "per_s"), [("80", 80), ("5000/h", 5000 / 3600), ("60/m", 1)])
def test_rates(text: str, per_s: float) -> None:
    assert parse_rate(text, "--rate") == pytest.approx(per_s)


def test_latency_forms() -> None:
    assert parse_latency("150ms") == LatencyModel.constant(0.15)
    lognormal = parse_latency("lognormal:150ms,p99=600ms")
    assert isinstance(lognormal, LatencyModel)
    assert lognormal.kind == "lognormal"
    assert parse_latency("db:sqlite:///./x.db") == DbLatency("sqlite:///./x.db")


def test_lognormal_has_the_asked_mean_and_p99() -> None:
    model = LatencyModel.lognormal(0.15, 0.6)
    draw = model.sampler(random.Random(1))
    samples = sorted(draw() for _ in range(100_000))
    assert sum(samples) / len(samples) == pytest.approx(0.15, rel=0.03)
    assert percentile(samples, 99) == pytest.approx(0.6, rel=0.05)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("soon", "--latency: 'soon' is not a latency; accepted: 150ms"),
        ("lognormal:150ms", "accepted forms are"),
        ("lognormal:600ms,p99=150ms", "0 < mean < p99"),
        ("0ms", "more than zero"),
    ],
)
def test_latency_errors_name_the_option(text: str, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        parse_latency(text)


def test_profiles() -> None:
    p = parse_profile("5000/h spike 10x 10m")
    assert p.rate_per_s == pytest.approx(5000 / 3600)
    assert p.spike_window() == (1500, 2100)
    assert p.peak_rate_per_s == pytest.approx(50000 / 3600)
    due = p.due_times(random.Random(0))
    in_spike = sum(1 for t in due if 1500 <= t < 2100)
    assert in_spike == pytest.approx(50000 / 6, rel=0.05)
    assert parse_profile("typical-day").kind == "typical-day"
    day = parse_profile("typical-day").due_times(random.Random(0))
    per_run = [0] * 288
    for t in day:
        per_run[int(t // 300)] += 1
    assert sum(1 for c in per_run if c <= 5) / 288 > 0.9  # "0-5 per run"
    assert max(per_run) >= 10  # "rarely 10+"
    spike = parse_profile("spike-day").due_times(random.Random(0))
    assert max(sum(1 for t in spike if w * 300 <= t < (w + 1) * 300) for w in range(288)) >= 50


@pytest.mark.parametrize("text", ["lots", "5000/week", "5000/h spike 10x 2h"])
def test_profile_errors(text: str) -> None:
    with pytest.raises(InputError, match="--profile"):
        parse_profile(text)


def test_int_lists() -> None:
    assert parse_int_list("20,30,50", "--batch") == (20, 30, 50)
    with pytest.raises(InputError, match="--batch: 'x'"):
        parse_int_list("20,x", "--batch")
    with pytest.raises(InputError, match="--concurrency"):
        parse_int_list("0", "--concurrency")
