"""The dispatcher's small state objects: pacing, outage detection, breaker, settling
refused reservations, and the outcome rows they produce. No I/O, time passed in."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dripline.dispatcher import outcomes
from dripline.dispatcher.breaker import Breaker, BreakerState
from dripline.dispatcher.constants import (
    OUTAGE_MIN_S,
    OUTAGE_PAUSE_CAP_S,
    OUTAGE_STREAK,
    THROTTLE_CAP_S,
)
from dripline.dispatcher.outage import CodeStreak, OutageDetector
from dripline.dispatcher.pacing import SenderPacing
from dripline.dispatcher.reactions import Action, Failure, Reaction, react
from dripline.dispatcher.reconcile import (
    Settle,
    Unknown,
    covered,
    evidence_deadline,
    proven_unaccepted,
    settle,
    unknowns,
)
from dripline.flows.base import Transition
from dripline.settings import Delivery
from dripline.store import LEASE_LOST
from dripline.store.base import Conversation, Outcome, ReservationResult

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _conv(**kw: object) -> Conversation:
    values: dict[str, object] = dict(
        id=7,
        phone="+14155550100",
        flow="f",
        step=1,
        purpose="question",
        state="in_progress",
        attempts=2,
        next_send_at=T0,
        lease_owner="w1",
        lease_expires_at=T0 + timedelta(seconds=60),
        last_inbound_at=None,
        last_error=None,
        name=None,
        timezone=None,
        sender=None,
        fields={},
        created_at=T0,
        updated_at=T0,
    )
    values.update(kw)
    return Conversation(**values)  # type: ignore[arg-type]


def _res(status: str | None, **kw: object) -> ReservationResult:
    values: dict[str, object] = dict(
        conversation_id=7, message_id=70, ok=False, prior_status=status, attempts=1
    )
    values.update(kw)
    return ReservationResult(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------- pacing
def test_one_throttle_event_per_burst_however_many_responses() -> None:
    pacing = SenderPacing(100.0)
    rng = random.Random(1)
    first = pacing.on_throttle("n1", 10.0, None, rng)
    others = [pacing.on_throttle("n1", 10.01, None, rng) for _ in range(50)]
    assert first.new_event and first.streak == 1
    assert not any(e.new_event for e in others)
    assert all(e.streak == 1 for e in others)
    # Every message of the burst waits out the same pause, whatever its arrival.
    pause_end = 10.0 + first.delay_s
    assert all(abs((10.01 + e.delay_s) - pause_end) <= 0.1 + 1e-9 for e in others)


def test_throttle_honours_retry_after_and_is_per_number() -> None:
    pacing = SenderPacing(100.0)
    rng = random.Random(1)
    event = pacing.on_throttle("n1", 0.0, 2.0, rng)
    assert 2.0 <= event.delay_s <= 2.1
    assert pacing.peek("n1", 0.0) >= 2.0 - 1e-9
    assert pacing.peek("n2", 0.0) == 0.0  # another number is not paused


@given(st.integers(min_value=1, max_value=40))
def test_throttle_pauses_grow_and_stay_capped(events: int) -> None:
    pacing = SenderPacing(100.0)
    rng = random.Random(events)
    now = 0.0
    for _ in range(events):
        e = pacing.on_throttle("n", now, None, rng)
        assert e.delay_s <= THROTTLE_CAP_S + 0.1 + 1e-9
        now += e.delay_s + 0.2
    assert e.streak == events
    pacing.on_accept("n")
    assert pacing.on_throttle("n", now + 10, None, rng).streak == 1


def test_throttle_cuts_the_rate_and_share_caps_it() -> None:
    pacing = SenderPacing(100.0)
    pacing.on_throttle("n", 0.0, None, random.Random(1))
    assert pacing.rate_of("n") < 100.0
    pacing.set_share(10.0)
    assert pacing.rate_of("n") <= 10.0
    assert pacing.total_rate() == pacing.rate_of("n")


def test_pause_all_holds_every_number() -> None:
    pacing = SenderPacing(100.0)
    pacing.peek("a", 0.0)
    pacing.peek("b", 0.0)
    pacing.pause_all(3.0)
    assert pacing.peek("a", 0.0) >= 3.0 - 1e-9
    assert pacing.peek("b", 0.0) >= 3.0 - 1e-9


# ---------------------------------------------------------------- outage
def test_an_outage_needs_both_a_streak_and_time() -> None:
    d = OutageDetector()
    # A burst of failures inside OUTAGE_MIN_S is not an outage (errors come back first).
    for i in range(OUTAGE_STREAK * 3):
        assert d.on_transient(i * 0.001).pause_until is None
    d = OutageDetector()
    verdicts = [d.on_transient(i * OUTAGE_MIN_S) for i in range(OUTAGE_STREAK + 1)]
    assert verdicts[-1].pause_until is not None and verdicts[-1].new_pause


def test_outage_pauses_double_per_probe_and_a_success_ends_it() -> None:
    d = OutageDetector()
    now = 0.0
    pauses = []
    for _ in range(200):
        v = d.on_transient(now)
        if v.new_pause:
            assert v.pause_until is not None
            pauses.append(v.pause_until - now)
        now += 0.1
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(pauses))
    assert abs(max(pauses) - OUTAGE_PAUSE_CAP_S) < 1e-9
    assert d.on_success() is True
    assert d.on_success() is False


def test_code_streak_trips_on_the_same_code_only() -> None:
    s = CodeStreak(threshold=3)
    assert not s.on_unknown_code(999)
    assert not s.on_unknown_code(998)  # another code starts over
    assert not s.on_unknown_code(998)
    assert s.on_unknown_code(998)


# --------------------------------------------------------------- breaker
def _state(b: Breaker) -> BreakerState:
    """Read afresh: mypy keeps an attribute narrowed across the calls that change it."""
    return b.state


def test_breaker_opens_once_probes_and_restores_concurrency() -> None:
    b = Breaker()
    assert b.trip("190: token expired")
    assert not b.trip("190: again")  # one alert per opening
    assert b.is_open and b.tripped
    b.half_open(concurrency=50)
    assert _state(b) is BreakerState.HALF_OPEN
    assert b.trip("190: still expired")  # a failed probe opens it again
    b.half_open(concurrency=1)  # the probe's concurrency must not be remembered
    assert b.on_success() == 50
    assert _state(b) is BreakerState.CLOSED
    assert b.on_success() is None


# ------------------------------------------------------------- reconcile
def test_settle_each_prior_status() -> None:
    assert settle(_res(LEASE_LOST), step=1, attempts=0, max_attempts=5).action is Settle.DROP
    for status in ("sent", "delivered", "read"):
        s = settle(_res(status, status_at=T0), step=1, attempts=0, max_attempts=5)
        assert s.action is Settle.ACCEPTED and s.sent_at == T0
    assert settle(_res("unknown"), step=1, attempts=0, max_attempts=5).action is Settle.WAIT
    give_up = settle(_res("sending"), step=1, attempts=4, max_attempts=5)
    assert give_up.action is Settle.GIVE_UP and "step 2" in (give_up.reason or "")
    failed = settle(_res("failed", error_code=131026), step=1, attempts=0, max_attempts=5)
    assert failed.action is Settle.FAILED and failed.error_code == 131026


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_only_unknown_sends_are_candidates() -> None:
    refused = [
        _res("unknown", reserved_at=_at(1)),
        _res("sending", conversation_id=8, message_id=80, reserved_at=_at(2)),
        _res("sent", conversation_id=9, message_id=90, reserved_at=_at(3)),
        _res("unknown", conversation_id=10, message_id=100),  # no reservation time
    ]
    assert unknowns(refused) == [Unknown(7, 70, _at(1)), Unknown(8, 80, _at(2))]


def test_evidence_must_be_a_margin_old() -> None:
    assert evidence_deadline(_at(100), 60.0) == _at(40)


@pytest.mark.parametrize(
    ("uptime", "start", "end", "expected"),
    [
        ([(0, 100)], 10, 50, True),
        ([], 10, 50, False),
        ([(20, 100)], 10, 50, False),  # the receiver came up after the send
        ([(0, 30)], 10, 50, False),  # and went down before the evidence matured
        ([(0, 29), (30, 100)], 10, 50, True),  # a gap within the tolerance
        ([(0, 25), (30, 100)], 10, 50, False),  # a gap longer than it
        ([(30, 100), (0, 29)], 10, 50, True),  # order does not matter
    ],
)
def test_intake_coverage(
    uptime: list[tuple[float, float]], start: float, end: float, expected: bool
) -> None:
    spans = [(_at(a), _at(b)) for a, b in uptime]
    assert covered(spans, _at(start), _at(end), tolerance_s=1.5) is expected


def test_unknown_sends_are_proven_by_later_statuses_with_the_intake_up() -> None:
    sent = Unknown(7, 70, _at(10))
    up = [(_at(0), _at(1000))]

    # A later send's status applied at 20 s; its own status had until 20 + 60 s to come.
    def proven(
        evidence: dict[int, datetime],
        uptime: list[tuple[datetime, datetime]] = up,
        waiting: datetime | None = None,
    ) -> list[int]:
        return proven_unaccepted(
            [sent], evidence, uptime, oldest_waiting_at=waiting, margin_s=60, tolerance_s=1.5
        )

    assert proven({70: _at(20)}) == [7]
    # No status for any later send: no proof, whatever the time.
    assert proven({}) == []
    # The receiver was down in between: Meta may still hold this send's status.
    assert proven({70: _at(20)}, [(_at(0), _at(30)), (_at(60), _at(1000))]) == []
    # A webhook received before the margin ran out is still waiting to be applied: it
    # may be this send's own status.
    assert proven({70: _at(20)}, waiting=_at(50)) == []
    assert proven({70: _at(20)}, waiting=_at(81)) == [7]


# -------------------------------------------------------------- outcomes
def _failure_outcome(action: Action, *, counts: bool = True) -> Outcome:
    reaction = Reaction(action, 5.0, counts, "failed", "131000: boom")
    failure = Failure("transient", 131000, "boom")
    return outcomes.after_failure(_conv(), failure, reaction, message_id=70, now=T0)


def test_outcomes_after_each_reaction() -> None:
    trip = _failure_outcome(Action.TRIP)
    assert trip.conversation.next_send_at == T0 and trip.conversation.attempts == 2
    fail = _failure_outcome(Action.FAIL)
    assert fail.conversation.state == "failed" and fail.conversation.attempts == 3
    assert fail.message is not None and fail.message.error_code == 131000
    fb = _failure_outcome(Action.FALLBACK)
    assert fb.conversation.purpose == "fallback" and fb.conversation.next_send_at == T0
    retry = _failure_outcome(Action.RETRY, counts=False)
    assert retry.conversation.next_send_at == T0 + timedelta(seconds=5)
    assert retry.conversation.attempts == 2


def test_a_sent_outcome_carries_only_a_new_wa_id() -> None:
    t = Transition("awaiting_reply", 0, "question", T0 + timedelta(hours=1))

    def learned(known: str | None, answered: str | None) -> str | None:
        conv = _conv(wa_id=known)
        out = outcomes.sent(
            conv, t, message_id=7, wamid="wamid.x", sent_at=T0, latency_s=0.1, wa_id=answered
        )
        assert out.message is not None and out.message.status == "sent"
        assert out.conversation.state == "awaiting_reply" and out.conversation.attempts == 0
        return out.conversation.wa_id

    assert learned(None, "15551234567") == "15551234567"
    assert learned("15551234567", "15551234567") is None  # nothing to change
    assert learned("15551234567", "15559999999") == "15559999999"
    assert learned("15551234567", None) is None


def test_unknown_error_codes_retry_then_fail() -> None:
    def r(attempts: int) -> Reaction:
        return react(
            Failure("unknown", 999999, "new code"),
            attempts=attempts,
            max_attempts=3,
            delivery=Delivery.AT_MOST_ONCE,
            purpose="question",
            has_fallback=False,
            retry_base_s=1.0,
            retry_cap_s=10.0,
            rng=random.Random(1),
        )

    assert r(0).action is Action.RETRY and r(0).counts_attempt
    assert r(2).action is Action.FAIL
