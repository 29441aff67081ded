"""How fast each sender number may send: its token bucket, its AIMD rate and its throttle
pauses, as one small state object per number. Pure: time (monotonic seconds) and the
random source are passed in, so the simulator and unit tests drive it directly.

The Cloud API limits each business phone number separately, so everything here is per
number (`key`), its rate included: the default number's is `share_per_s`, another's is
set with `set_number_rate` (its own `rate_per_s`, or its throughput tier). Workers split
each number's rate (`set_share`); a throttle (130429)
from the API cuts one number's rate to just under what it was seen to accept and pauses
it; the rate then creeps back up (`tick`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from dripline.dispatcher.backoff import throttle_backoff_s
from dripline.dispatcher.constants import THROTTLE_BASE_S, THROTTLE_CAP_S, THROTTLE_MIN_PAUSE_S
from dripline.dispatcher.ratelimit import RateController, RateLimiter
from dripline.dispatcher.slots import StartWindow

__all__ = ["SenderPacing", "ThrottleEvent"]


@dataclass(frozen=True, slots=True)
class ThrottleEvent:
    """What one throttled response means for its message and its number."""

    delay_s: float  # how long this message waits before it is due again
    new_event: bool  # the first throttled response of a burst (others join its pause)
    streak: int  # throttle events in a row without an accepted send
    rate_per_s: float  # the number's rate after the event


@dataclass(slots=True)
class _Number:
    limiter: RateLimiter
    controller: RateController
    streak: int = 0  # throttle events (not responses) since the last accepted send
    pause_until: float = 0.0
    # For status and metrics (`snapshot`): accepted sends, throttled responses, and
    # other failures of this number in this run.
    sent: int = 0
    throttled: int = 0
    errors: int = 0


@dataclass(slots=True)
class SenderPacing:
    """Token buckets and throttle state for every sender number this worker uses."""

    share_per_s: float  # this worker's share of the default number's rate
    burst_s: float = 0.05
    _numbers: dict[str, _Number] = field(default_factory=dict)
    # The global rate (all workers) of numbers whose rate is not the default one's.
    _rates: dict[str, float] = field(default_factory=dict)
    _workers: int = 1  # live workers: each number's rate is split between them
    _starts: StartWindow = field(default_factory=StartWindow)

    def _number(self, key: str) -> _Number:
        number = self._numbers.get(key)
        if number is None:
            ceiling = self.ceiling(key)
            number = self._numbers[key] = _Number(
                RateLimiter(ceiling, self.burst_s),
                RateController(ceiling=ceiling, current=ceiling),
            )
        return number

    def ceiling(self, key: str) -> float:
        """This worker's share of `key`'s rate: what it sends at when not throttled."""
        rate = self._rates.get(key)
        return self.share_per_s if rate is None else rate / self._workers

    # ------------------------------------------------------------ the send path
    def peek(self, key: str, now: float) -> float:
        """Seconds until `key` has a token, without taking it."""
        return self._number(key).limiter.peek(now)

    def reserve(self, key: str, now: float) -> float:
        """Take a token for `key`; the seconds to wait before using it."""
        return self._number(key).limiter.reserve(now)

    def start_wait(self, key: str, now: float) -> float:
        """Seconds before a send whose token is due may start at `now` (0: go, and it
        counts as started): only a send delayed by a slot wait ever has to wait here."""
        return self._starts.wait(key, self._number(key).limiter.rate_per_s, now)

    def on_accept(self, key: str) -> None:
        number = self._number(key)
        number.streak = 0
        number.sent += 1
        number.controller.record_accept()

    def on_error(self, key: str) -> None:
        """A send from `key` failed other than by a throttle (counted for status)."""
        self._number(key).errors += 1

    def on_throttle(
        self, key: str, now: float, retry_after_s: float | None, rng: random.Random
    ) -> ThrottleEvent:
        """A throughput error (130429) for `key`.

        All sends in flight when the API's bucket ran dry come back throttled together:
        that is one event. The first one pauses the number (Retry-After when given, else
        THROTTLE_BASE_S doubling per consecutive event, jittered, at most THROTTLE_CAP_S)
        and lowers its rate; the rest only wait out the same pause.
        """
        number = self._number(key)
        number.throttled += 1
        new_event = now >= number.pause_until
        if new_event:
            number.streak += 1
            pause = throttle_backoff_s(
                number.streak - 1,
                retry_after_s,
                base_s=THROTTLE_BASE_S,
                cap_s=THROTTLE_CAP_S,
                rng=rng,
            )
            number.pause_until = now + max(THROTTLE_MIN_PAUSE_S, pause)
            number.limiter.pause_until(number.pause_until)
            number.limiter.set_rate(number.controller.on_throttle(now))
        delay = number.pause_until - now + rng.uniform(0.0, 0.1)
        return ThrottleEvent(delay, new_event, number.streak, number.limiter.rate_per_s)

    def pause_all(self, until: float) -> None:
        """No number sends before `until` (a suspected API outage)."""
        for number in self._numbers.values():
            number.limiter.pause_until(until)

    # ------------------------------------------------------------- control loop
    def tick(self, now: float) -> None:
        """About twice a second: each number's rate creeps back towards its ceiling."""
        for number in self._numbers.values():
            number.limiter.set_rate(number.controller.tick(now))

    @property
    def workers(self) -> int:
        """Live workers the rates are split between (as of the last heartbeat)."""
        return self._workers

    def set_share(self, share_per_s: float, workers: int = 1) -> None:
        """A new share of the default number's rate, and of every other number's (each
        split between `workers`): workers joined or left, or the default's tier moved."""
        if share_per_s == self.share_per_s and max(1, workers) == self._workers:
            return
        self.share_per_s = share_per_s
        self._workers = max(1, workers)
        for key, number in self._numbers.items():
            number.limiter.set_rate(number.controller.set_ceiling(self.ceiling(key)))

    def set_number_rate(self, key: str, rate_per_s: float) -> None:
        """Number `key`'s global rate (all workers): its own setting or its tier."""
        self._rates[key] = rate_per_s
        number = self._numbers.get(key)
        if number is not None:
            number.limiter.set_rate(number.controller.set_ceiling(self.ceiling(key)))

    def total_ceiling(self, keys: Iterable[str]) -> float:
        """This worker's share of the rates of `keys` together (claim sizing)."""
        return sum(self.ceiling(k) for k in set(keys))

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per number: its global rate, this worker's current rate (after throttles),
        sends, throttled responses and other errors in this run (status, metrics)."""
        return {
            key: {
                "rate_per_s": round(self.ceiling(key) * self._workers, 3),
                "current_per_s": round(n.limiter.rate_per_s, 3),
                "sent": n.sent,
                "throttled": n.throttled,
                "errors": n.errors,
            }
            for key, n in sorted(self._numbers.items())
        }

    def total_rate(self) -> float:
        """The sum of every number's current rate (this worker's share when none yet)."""
        rates = [n.limiter.rate_per_s for n in self._numbers.values()]
        return sum(rates) if rates else self.share_per_s

    def rate_of(self, key: str) -> float:
        return self._number(key).limiter.rate_per_s
