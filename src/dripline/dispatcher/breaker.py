"""The circuit breaker: credentials or the account are broken, so nothing is sent.

closed -> open (an auth/account error, or the same unknown error code many times in a
row) -> half-open after `probe_s` (one send at a time) -> closed on the first accepted
send, or open again on the next breaker error. With `on_auth_failure = exit` the
dispatcher stops instead of probing. Pure state; the engine does the waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Breaker", "BreakerState"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class Breaker:
    state: BreakerState = BreakerState.CLOSED
    reason: str | None = None
    tripped: bool = False  # ever opened during this run (exit code 3)
    saved_concurrency: int = 0  # the concurrency to restore when a probe succeeds

    @property
    def is_open(self) -> bool:
        return self.state is BreakerState.OPEN

    def trip(self, reason: str) -> bool:
        """Open the breaker; False when it was open already (one alert per opening)."""
        if self.state is BreakerState.OPEN:
            return False
        self.state = BreakerState.OPEN
        self.reason = reason
        self.tripped = True
        return True

    def half_open(self, concurrency: int) -> None:
        """Let one probe through; remember the concurrency to give back."""
        if self.state is BreakerState.OPEN:
            self.state = BreakerState.HALF_OPEN
            if not self.saved_concurrency:
                self.saved_concurrency = concurrency

    def on_success(self) -> int | None:
        """An accepted send. When it closes a half-open breaker, the concurrency to restore."""
        if self.state is not BreakerState.HALF_OPEN:
            return None
        self.state = BreakerState.CLOSED
        restore, self.saved_concurrency = self.saved_concurrency, 0
        return restore
