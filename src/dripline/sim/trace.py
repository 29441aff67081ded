"""The run's trace: every event the world saw, in order, with its virtual time.

Two runs of one seed must produce the same trace; its digest is how replays are
compared. The tail is printed when an invariant fails."""

from __future__ import annotations

import hashlib
from collections import deque

__all__ = ["Trace"]


class Trace:
    def __init__(self, keep: int | None = 400) -> None:
        self._hash = hashlib.sha256()
        self._tail: deque[str] = deque(maxlen=keep)
        self.events = 0

    def add(self, t: float, what: str) -> None:
        line = f"{t:12.6f} {what}"
        self._hash.update(line.encode())
        self._tail.append(line)
        self.events += 1

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()[:16]

    def tail(self, n: int | None = 60) -> list[str]:
        lines = list(self._tail)
        return lines if n is None else lines[-n:]
