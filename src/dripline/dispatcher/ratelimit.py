"""Rate limiting on the send path: a scheduling token bucket per sender number, and a
per-recipient pace for the Cloud API's pair limit.

The bucket is GCRA-style: `reserve()` never blocks, it returns how long the caller must
wait before starting. That lets the launcher batch the reservation of several sends that
may all start within a short window, and sleep outside any concurrency slot.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["RateController", "RateLimiter", "RecipientPacer"]


@dataclass(slots=True)
class RateLimiter:
    """Messages-per-second budget with a small burst allowance.

    `burst_s` is how far ahead of the steady schedule a send may start: 0.05 s at 1,000/s
    lets 50 start at once after an idle period, and never more than the rate over time.
    """

    rate_per_s: float
    burst_s: float = 0.05
    _tat: float = 0.0  # theoretical arrival time of the next token (monotonic seconds)

    def reserve(self, now: float) -> float:
        """Take one token; return the seconds to wait before using it (0 = go now)."""
        interval = 1.0 / self.rate_per_s
        tat = max(self._tat, now)
        start = max(now, tat - self.burst_s)
        self._tat = tat + interval
        return start - now

    def peek(self, now: float) -> float:
        """Seconds until a token would be available, without taking it."""
        return max(0.0, max(self._tat, now) - self.burst_s - now)

    def pause_until(self, when: float) -> None:
        """No token before `when` (a throttle response or Retry-After)."""
        self._tat = max(self._tat, when + self.burst_s)

    def set_rate(self, rate_per_s: float) -> None:
        self.rate_per_s = max(rate_per_s, 1e-3)


class RecipientPacer:
    """Remembers when each recipient was last sent to, so one user is never sent two
    messages within `interval_s` (the pair limit).

    Only sends less than `interval_s` old matter, so older ones are forgotten as new
    ones come in: the memory held is about rate x `interval_s` entries (6,000 at
    1,000 msg/s), not one per recipient ever seen. Keeping every recipient up to a cap
    of 100,000 cost ~30 MB of RSS that a long-running worker never gave back (the soak
    benchmark's curve rose ~33 MB over its first 100,000 messages, then went flat).
    `max_entries` still caps a burst scheduled far ahead.
    """

    def __init__(self, interval_s: float, max_entries: int = 100_000) -> None:
        self.interval_s = interval_s
        self._max = max_entries
        self._last: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def ready_at(self, phone: str, now: float) -> float:
        """The earliest monotonic time a message to `phone` may start."""
        last = self._last.get(phone)
        if last is None:
            return now
        return max(now, last + self.interval_s)

    def mark(self, phone: str, now: float) -> None:
        """`phone` is sent to at `now` (a send's start, which may be a little ahead)."""
        if self.interval_s <= 0:
            return  # no pair limit: nothing to remember
        self._last[phone] = now
        self._last.move_to_end(phone)
        # Oldest first (marks come in about time order): an entry whose interval is
        # over paces nothing, as if it were absent.
        last = self._last
        while last and (
            len(last) > self._max or next(iter(last.values())) + self.interval_s <= now
        ):
            last.popitem(last=False)


@dataclass(slots=True)
class RateController:
    """AIMD on one sender number's send rate.

    On a throttle the rate drops to just under what the API was observed to accept (or
    by `decrease` when nothing was observed yet), so the next probe starts close to the
    real limit. While there is no throttle the rate creeps up by `increase_frac` of the
    ceiling per second, slowly, so probing past the API's limit costs few rejected
    requests. It never exceeds `ceiling`, this worker's share of the configured rate.
    """

    ceiling: float
    current: float
    floor_frac: float = 0.05
    decrease: float = 0.7
    observed_margin: float = 0.98
    increase_frac: float = 0.005
    cooldown_s: float = 1.0
    _last_cut: float = -1e9
    _accepted: int = 0
    _window_start: float = 0.0
    observed_rate: float | None = None

    def record_accept(self) -> None:
        self._accepted += 1

    def tick(self, now: float) -> float:
        """Called about twice a second: update the observed rate, probe upward."""
        elapsed = now - self._window_start
        if elapsed >= 0.5:
            # Learn only from windows that sent something: an idle spell or an outage
            # says nothing about the API's limit and must not drag the estimate to 0.
            if self._accepted:
                rate = self._accepted / elapsed
                self.observed_rate = (
                    rate if self.observed_rate is None else (0.5 * self.observed_rate + 0.5 * rate)
                )
            self._accepted = 0
            self._window_start = now
            if now - self._last_cut > self.cooldown_s:
                self.current = min(
                    self.ceiling, self.current + self.ceiling * self.increase_frac * elapsed
                )
        return self.current

    def on_throttle(self, now: float) -> float:
        """Cut the rate once per cooldown, however many in-flight sends report it."""
        if now - self._last_cut < self.cooldown_s:
            return self.current
        self._last_cut = now
        observed = self.observed_rate
        # Trust the observation only when it is plausible for the current rate; after
        # a pause or a ramp-up it lags, and a plain multiplicative cut is safer.
        if observed and observed >= 0.2 * self.current:
            target = min(self.current, observed) * self.observed_margin
        else:
            target = self.current * self.decrease

        self.current = max(self.ceiling * self.floor_frac, target)
        return self.current

    def set_ceiling(self, ceiling: float) -> float:
        """A new share of the global rate (workers joined or left)."""
        if self.current >= self.ceiling or self.current > ceiling:
            self.current = ceiling
        self.ceiling = ceiling
        return self.current
