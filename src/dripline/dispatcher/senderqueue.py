"""Which queued conversation the launcher takes next when several sender numbers share
the queue. Pure.

The queue is in due order. Each number has its own token bucket (`pacing.py`), so when
the conversation at the head waits for its number's next token, a conversation further
back on another number that has a token now must not wait behind it: a backlog mixing a
300/s number and a 700/s one would otherwise drain both at the slower one's pace (head
of line blocking). Within one number the due order is kept.

The scan stops at the first conversation whose number is ready, once every configured
number was seen waiting, or after `SCAN_LIMIT` rows (a queue of one slow number's rows
is then not walked end to end on every token).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ["SCAN_LIMIT", "first_ready"]

T = TypeVar("T")

SCAN_LIMIT = 512


def first_ready(
    queue: Iterable[T],
    key_of: Callable[[T], str],
    ready: Callable[[str], bool],
    numbers: int,
) -> int | None:
    """The index of the first item whose number is `ready`, else None. `numbers`: how
    many sender numbers there are (the scan stops once each was seen waiting)."""
    waiting: set[str] = set()
    for index, item in enumerate(queue):
        if index >= SCAN_LIMIT:
            return None
        key = key_of(item)
        if key in waiting:
            continue
        if ready(key):
            return index
        waiting.add(key)
        if len(waiting) >= numbers:
            return None
    return None
