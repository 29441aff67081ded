"""The fake's decisions as pure functions: buckets, latency shape, validation, replies."""

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dripline.fake import FakeConfig, FakeState, TokenBucket, check_message, lognormal_params
from dripline.fake.app import Parsed, Problem
from dripline.fake.templates import TemplateParams
from dripline.fake.webhooks import reply_for


def test_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, capacity=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.1)  # one token refilled
    assert not bucket.take(0.1)


def test_at_twice_the_rate_about_half_is_throttled() -> None:
    # Simulated clock: 2,000 requests at 2x the 80/s rate, bucket of one second.
    state = FakeState(FakeConfig(rate_per_s=80))
    results = [state.take_throughput("111", i / 160) for i in range(2000)]
    throttled = results.count(False)
    assert 0.45 <= throttled / len(results) <= 0.5  # 80 burst tokens make it a bit less


def test_throughput_is_per_phone_number() -> None:
    state = FakeState(FakeConfig(rate_per_s=1, burst=1))
    assert state.take_throughput("a", 0.0)
    assert not state.take_throughput("a", 0.0)
    assert state.take_throughput("b", 0.0)


def test_pair_limit_one_per_6s_with_burst_45() -> None:
    state = FakeState(FakeConfig())
    assert all(state.take_pair("111", "u", 0.0) for _ in range(45))
    assert not state.take_pair("111", "u", 0.0)
    assert not state.take_pair("111", "u", 5.9)
    assert state.take_pair("111", "u", 6.1)
    assert state.take_pair("111", "other", 6.1)


def test_pair_limit_can_be_disabled() -> None:
    state = FakeState(FakeConfig(pair_interval_s=0))
    assert all(state.take_pair("111", "u", 0.0) for _ in range(1000))


def test_window_opens_on_inbound_and_closes_after_24h() -> None:
    state = FakeState(FakeConfig())
    assert not state.window_open("111", "u", 100.0)
    state.open_window("111", "u", 100.0)
    assert state.window_open("111", "u", 100.0 + 24 * 3600 - 1)
    assert not state.window_open("111", "u", 100.0 + 24 * 3600)
    assert not state.window_open("222", "u", 100.0)  # per business number


@given(
    st.floats(min_value=1, max_value=5000),
    st.floats(min_value=1.01, max_value=10),
)
def test_lognormal_has_the_asked_mean_and_p99(mean_ms: float, ratio: float) -> None:
    mu, sigma = lognormal_params(mean_ms, mean_ms * ratio)
    assert math.isclose(math.exp(mu + sigma**2 / 2), mean_ms, rel_tol=1e-9)
    assert math.isclose(math.exp(mu + 2.3263478740408408 * sigma), mean_ms * ratio, rel_tol=1e-6)


def test_lognormal_samples_match_roughly() -> None:
    mu, sigma = lognormal_params(150, 600)
    rng = random.Random(7)
    samples = sorted(rng.lognormvariate(mu, sigma) for _ in range(20000))
    assert 140 < sum(samples) / len(samples) < 160
    assert 520 < samples[int(0.99 * len(samples))] < 690


def test_lognormal_degenerate_cases() -> None:
    assert lognormal_params(100, 100) == (math.log(100), 0.0)
    assert lognormal_params(100, 1e9)[1] == pytest.approx(2.3263478740408408)


TEXT = {"messaging_product": "whatsapp", "to": "+1 (555) 123-4567", "type": "text"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {**TEXT, "text": {"body": "hi"}},
            Parsed("15551234567", TEXT["to"], "text", "hi", None),
        ),
        ([], Problem),
        ({**TEXT, "messaging_product": "sms", "text": {"body": "hi"}}, Problem),
        ({**TEXT, "to": 15551234567, "text": {"body": "hi"}}, Problem),
        ({**TEXT, "to": "call me", "text": {"body": "hi"}}, Problem),
        ({**TEXT, "text": {}}, Problem),
        ({**TEXT, "text": {"body": " "}}, Problem),
        ({**TEXT, "text": {"body": "x" * 4097}}, Problem),
        ({**TEXT, "type": "fax"}, Problem),
        ({**TEXT, "type": "image"}, Problem),
        ({**TEXT, "text": {"body": "hi"}, "biz_opaque_callback_data": "x" * 513}, Problem),
        ({**TEXT, "type": "template", "template": {"name": "t"}}, Problem),
        (
            {
                **TEXT,
                "type": "template",
                "template": {
                    "name": "t",
                    "language": {"code": "en"},
                    "components": [{"type": "body", "parameters": [{}, {}]}],
                },
            },
            Parsed("15551234567", TEXT["to"], "template", "t", None, "en", TemplateParams(body=2)),
        ),
    ],
)
def test_check_message(body: object, expected: object) -> None:
    result = check_message(body)
    if expected is Problem:
        assert isinstance(result, Problem)
        assert result.code == 100
    else:
        assert result == expected


def test_replies_are_a_stable_fraction_of_recipients() -> None:
    users = [f"1555{i:07d}" for i in range(10000)]
    answers = [reply_for(u, 0.3, 0.1, "yes") for u in users]
    assert answers == [reply_for(u, 0.3, 0.1, "yes") for u in users]
    assert 0.07 < answers.count("STOP") / len(users) < 0.13
    assert 0.25 < answers.count("yes") / len(users) < 0.35
    assert all(reply_for(u, 0, 0, "yes") is None for u in users[:100])
