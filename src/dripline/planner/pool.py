"""The simulator's bookkeeping, apart from its decisions (split from `simulate.py`):
the pool of rows not yet claimed, and the peak send rate over a window.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right

__all__ = ["Pool", "peak_rate"]


class Pool:
    """Rows not yet claimed: the arrivals (sorted, consumed by an index) and throttled
    retries rescheduled into the future, as the real dispatcher persists them."""

    def __init__(self, due: list[float]) -> None:
        self.due = due
        self.i = 0
        self.retries: list[tuple[float, int, float, int]] = []  # (next_send_at, seq, due, att)
        self._seq = 0

    def next_due(self) -> float | None:
        head = self.due[self.i] if self.i < len(self.due) else None
        if self.retries and (head is None or self.retries[0][0] < head):
            return self.retries[0][0]
        return head

    def count_due(self, t: float) -> int:
        n = bisect_right(self.due, t, lo=self.i) - self.i
        return n + sum(1 for r in self.retries if r[0] <= t)

    def take(self, t: float, n: int) -> list[tuple[float, int]]:
        """Up to `n` rows due at `t`, in due order: (original due time, attempts)."""
        if not self.retries:
            j = min(bisect_right(self.due, t, lo=self.i), self.i + n)
            rows = [(d, 0) for d in self.due[self.i : j]]
            self.i = j
            return rows
        rows = []
        while len(rows) < n:
            head = self.due[self.i] if self.i < len(self.due) else math.inf
            if self.retries and self.retries[0][0] <= min(head, t):
                _, _, d, att = heapq.heappop(self.retries)
                rows.append((d, att))
            elif head <= t:
                rows.append((head, 0))
                self.i += 1
            else:
                break
        return rows

    def retry(self, at: float, due: float, attempts: int) -> None:
        self._seq += 1
        heapq.heappush(self.retries, (at, self._seq, due, attempts))


def peak_rate(starts: list[float], window_s: float = 1.0) -> float:
    """The most send attempts started within any `window_s` window, per second."""
    best = 0
    lo = 0
    for hi, t in enumerate(starts):
        while t - starts[lo] >= window_s - 1e-9:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window_s
