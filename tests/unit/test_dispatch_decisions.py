"""Pure decisions of the dispatcher: reactions per error class, backoff, rate limiting."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dripline.dispatcher.backoff import full_jitter, pair_backoff_s, throttle_backoff_s
from dripline.dispatcher.ratelimit import RateController, RateLimiter, RecipientPacer
from dripline.dispatcher.reactions import Action, Failure, Reaction, react
from dripline.settings import Delivery


def _react(failure: Failure, **kw: object) -> Reaction:
    args: dict[str, object] = dict(
        attempts=0,
        max_attempts=5,
        delivery=Delivery.AT_MOST_ONCE,
        purpose="question",
        has_fallback=False,
        retry_base_s=1.0,
        retry_cap_s=300.0,
        rng=random.Random(1),
    )
    args.update(kw)
    return react(failure, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", ["auth", "account"])
def test_auth_and_account_trip_the_breaker_and_touch_nothing(cls: str) -> None:
    r = _react(Failure(cls, 190, "token expired"))
    assert r.action is Action.TRIP
    assert r.message_status == "pending"
    assert not r.counts_attempt


def test_throttle_waits_for_the_sender_without_counting_a_failure() -> None:
    r = _react(Failure("throttle", 130429, "rate limit hit"), attempts=4)
    assert r.action is Action.THROTTLE
    assert not r.counts_attempt
    assert r.message_status == "pending"


def test_pair_throttle_waits_4_to_the_x() -> None:
    r = _react(Failure("pair_throttle", 131056, "pair"), pair_hits=2)
    assert r.action is Action.RETRY
    assert r.delay_s == 16.0


def test_marketing_limit_waits_a_day() -> None:
    r = _react(Failure("quality_throttle", 131049, "marketing"))
    assert r.delay_s == 24 * 3600


def test_transient_retries_then_fails_with_the_reason() -> None:
    r = _react(Failure("transient", 131000, "boom"), attempts=1)
    assert r.action is Action.RETRY and r.counts_attempt
    assert 0 < r.delay_s <= 4.0
    last = _react(Failure("transient", 131000, "boom"), attempts=4)
    assert last.action is Action.FAIL
    assert "5 attempts" in last.reason and "131000" in last.reason


def test_maintenance_waits_a_minute() -> None:
    assert _react(Failure("transient", 131057, "maintenance")).delay_s == 60.0


def test_maybe_sent_is_never_blindly_resent_at_most_once() -> None:
    r = _react(Failure("transient", None, "read timeout", maybe_sent=True))
    assert r.action is Action.UNKNOWN
    assert r.message_status == "unknown"


def test_maybe_sent_is_retried_at_least_once() -> None:
    r = _react(
        Failure("transient", None, "read timeout", maybe_sent=True),
        delivery=Delivery.AT_LEAST_ONCE,
    )
    assert r.action is Action.RETRY


def test_window_closed_uses_the_fallback_once() -> None:
    assert _react(Failure("window", 131047, "re-engage"), has_fallback=True).action is (
        Action.FALLBACK
    )
    no_fb = _react(Failure("window", 131047, "re-engage"), has_fallback=False)
    assert no_fb.action is Action.FAIL and "no template fallback" in no_fb.reason
    again = _react(Failure("window", 131047, "x"), has_fallback=True, purpose="fallback")
    assert again.action is Action.FAIL


def test_window_closed_on_a_reminder_skips_it() -> None:
    # The step's template slot is the question's; a refused reminder is dropped and the
    # reply timeout runs on, with or without a fallback.
    for has_fallback in (True, False):
        r = _react(Failure("window", 131047, "x"), has_fallback=has_fallback, purpose="reminder")
        assert r.action is Action.SKIP and not r.counts_attempt


@pytest.mark.parametrize("code", [100, 131026, 131051, 132001])
def test_permanent_fails_at_once(code: int) -> None:
    r = _react(Failure("permanent", code, "bad"))
    assert r.action is Action.FAIL and str(code) in r.reason


@given(attempt=st.integers(0, 50), base=st.floats(0.01, 10), cap=st.floats(0.01, 1000))
def test_full_jitter_is_bounded(attempt: int, base: float, cap: float) -> None:
    d = full_jitter(attempt, base, cap, random.Random(0))
    assert 0 <= d <= min(cap, base * 2**attempt) + 1e-9


def test_throttle_backoff_floor_and_retry_after() -> None:
    assert throttle_backoff_s(0, None, rng=random.Random(0)) >= 0.05
    assert throttle_backoff_s(3, 2.5) == 2.5


def test_pair_backoff_is_meta_schedule() -> None:
    assert [pair_backoff_s(x) for x in range(4)] == [1, 4, 16, 64]
    assert pair_backoff_s(50) == 1024


def test_rate_limiter_spaces_tokens_at_the_rate() -> None:
    lim = RateLimiter(rate_per_s=10, burst_s=0.0)
    waits = [lim.reserve(0.0) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_rate_limiter_burst_lets_a_few_go_at_once() -> None:
    lim = RateLimiter(rate_per_s=100, burst_s=0.05)
    waits = [lim.reserve(10.0) for _ in range(8)]
    assert sum(1 for w in waits if w == 0) == 6  # 1 + 0.05 s * 100/s
    assert waits[-1] == pytest.approx(0.02)


@given(rate=st.floats(1, 2000), n=st.integers(1, 500))
def test_rate_limiter_never_exceeds_rate_plus_burst(rate: float, n: int) -> None:
    lim = RateLimiter(rate_per_s=rate, burst_s=0.05)
    starts = [lim.reserve(0.0) for _ in range(n)]
    horizon = max(starts)
    assert n <= rate * (horizon + 0.05) + 1 + 1e-6


def test_pause_until_holds_tokens() -> None:
    lim = RateLimiter(rate_per_s=100, burst_s=0.0)
    lim.pause_until(5.0)
    assert lim.reserve(1.0) == pytest.approx(4.0)


def test_recipient_pacer() -> None:
    p = RecipientPacer(6.0, max_entries=2)
    assert p.ready_at("+1", 0.0) == 0.0
    p.mark("+1", 1.0)
    assert p.ready_at("+1", 2.0) == 7.0
    p.mark("+2", 1.0)
    p.mark("+3", 1.0)  # evicts +1
    assert p.ready_at("+1", 2.0) == 2.0


def test_recipient_pacer_forgets_sends_whose_interval_is_over() -> None:
    # A worker sends to a new recipient each time, for ever: what it remembers must
    # stay at about rate x interval, not grow to the cap (~30 MB at 100,000).
    p = RecipientPacer(6.0)
    for i in range(50_000):
        p.mark(f"+{i}", i / 1000)  # 1,000 msg/s
    assert len(p) <= 6_001
    assert p.ready_at("+49999", 50.0) == pytest.approx(49.999 + 6.0)  # recent: paced
    assert p.ready_at("+0", 50.0) == 50.0  # long over


def test_recipient_pacer_without_a_pair_interval_remembers_nothing() -> None:
    p = RecipientPacer(0.0)
    for i in range(1000):
        p.mark(f"+{i}", float(i))
    assert len(p) == 0
    assert p.ready_at("+5", 5.0) == 5.0


def test_rate_controller_cuts_to_observed_and_creeps_back() -> None:
    c = RateController(ceiling=100.0, current=100.0)
    c.tick(0.0)
    for _ in range(80):
        c.record_accept()
    c.tick(1.0)  # observed 80/s
    cut = c.on_throttle(1.1)
    assert cut == pytest.approx(80 * 0.98, rel=0.01)
    assert c.on_throttle(1.2) == cut  # once per cooldown
    for t in range(2, 12):
        for _ in range(78):
            c.record_accept()
        c.tick(float(t))
    assert cut < c.current <= 100.0


def test_rate_controller_follows_a_smaller_share() -> None:
    c = RateController(ceiling=100.0, current=100.0)
    assert c.set_ceiling(50.0) == 50.0
    assert c.set_ceiling(100.0) == 100.0


@pytest.mark.parametrize(
    ("code", "attempts", "action", "delay_s"),
    [
        (131049, 0, Action.RETRY, 24 * 3600.0),  # per-user marketing limit: a day
        (131049, 3, Action.RETRY, 24 * 3600.0),
        (131049, 4, Action.FAIL, 0.0),  # capped: the 5th attempt was the last
        (131048, 0, Action.RETRY, 3600.0),  # spam rate limit: an hour
        (131048, 4, Action.FAIL, 0.0),
        (132069, 4, Action.FAIL, 0.0),
    ],
)
def test_quality_throttles_are_charged_and_capped(
    code: int, attempts: int, action: Action, delay_s: float
) -> None:
    r = _react(Failure("quality_throttle", code, "limit"), attempts=attempts, max_attempts=5)
    assert r.action is action
    assert r.counts_attempt
    assert r.delay_s == delay_s
    if action is Action.FAIL:
        assert r.reason == f"gave up after 5 attempts: {code}: limit"


@pytest.mark.parametrize("attempts", [0, 1, 2])
def test_an_unknown_code_is_retried_then_failed_never_held(attempts: int) -> None:
    r = _react(Failure("unknown", 999001, "new"), attempts=attempts, max_attempts=3)
    assert r.counts_attempt
    assert r.action is (Action.FAIL if attempts == 2 else Action.RETRY)
