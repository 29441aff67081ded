"""Is the Cloud API down, or are these messages bad? Small pure state objects.

`OutageDetector`: transient failures with no success between them, at least
OUTAGE_STREAK of them over at least OUTAGE_MIN_S, mean an outage. During one, the
sender pauses (doubling per probe, capped) and failures stop counting against a
message's attempts: the backlog is not at fault.

`CodeStreak`: the same error code dripline does not know, many times in a row, is most
likely a new account-level problem; the engine opens the breaker and names the code,
rather than failing message after message.
"""

from __future__ import annotations

from dataclasses import dataclass

from dripline.dispatcher.constants import (
    OUTAGE_MIN_S,
    OUTAGE_PAUSE_BASE_S,
    OUTAGE_PAUSE_CAP_S,
    OUTAGE_STREAK,
    UNKNOWN_CODE_BREAKER_STREAK,
)

__all__ = ["CodeStreak", "OutageDetector", "OutageVerdict"]


@dataclass(frozen=True, slots=True)
class OutageVerdict:
    """`pause_until` set: an outage; the message retries then without a charged attempt.
    `new_pause`: this failure started a new pause (log it, pause every number)."""

    pause_until: float | None
    new_pause: bool = False
    streak: int = 0


@dataclass(slots=True)
class OutageDetector:
    streak: int = 0
    streak_started: float = 0.0
    level: int = 0  # pauses so far in this outage
    pause_until: float = 0.0

    def on_transient(self, now: float) -> OutageVerdict:
        if self.streak == 0:
            self.streak_started = now
        self.streak += 1
        if self.streak < OUTAGE_STREAK or now - self.streak_started < OUTAGE_MIN_S:
            return OutageVerdict(None, streak=self.streak)
        new_pause = now >= self.pause_until
        if new_pause:
            # One step of backoff per probe, not per failure: a burst of in-flight
            # failures is one observation.
            self.level += 1
            pause = min(OUTAGE_PAUSE_CAP_S, OUTAGE_PAUSE_BASE_S * 2 ** (self.level - 1))
            self.pause_until = now + pause
        return OutageVerdict(self.pause_until, new_pause, self.streak)

    def on_success(self) -> bool:
        """An accepted send; True when it ended an outage."""
        ended = self.level > 0
        self.streak = 0
        self.level = 0
        return ended


@dataclass(slots=True)
class CodeStreak:
    """Counts the same unclassified error code in a row; any other outcome resets it."""

    threshold: int = UNKNOWN_CODE_BREAKER_STREAK
    code: int | None = None
    count: int = 0

    def on_unknown_code(self, code: int | None) -> bool:
        """True when `code` has now been seen `threshold` times in a row."""
        if code != self.code:
            self.code, self.count = code, 0
        self.count += 1
        return self.count >= self.threshold

    def reset(self) -> None:
        self.code, self.count = None, 0
