"""`Flag`: an `asyncio.Event` that can also wake a future it is given, so that one wait
can watch several flags and a timeout without a task per flag.

Written here rather than taken from a library: `asyncio.wait` over `Event.wait()`
tasks, which `Context.sleep` used before, started one task per watched event per sleep
(three for the idle claimer's, two for the recorder's): 8.3 new tasks per message at a
trickle in virtual time, now one, the send's own (issue 14; bench/README.md). A
`Flag` is still an `asyncio.Event` (`wait`, `set`, `clear`, `is_set`), so every store
and task that only knows events keeps working.
"""

from __future__ import annotations

import asyncio

__all__ = ["Flag", "wake"]


def wake(waiter: asyncio.Future[None]) -> None:
    """Resolve `waiter` unless something already did (or it was cancelled)."""
    if not waiter.done():
        waiter.set_result(None)


class Flag(asyncio.Event):
    """An event whose `set` also resolves the futures registered with `watch`."""

    def __init__(self) -> None:
        super().__init__()
        # Futures to resolve at the next `set`; each watcher removes its own.
        self._watchers: list[asyncio.Future[None]] = []

    def set(self) -> None:
        if self.is_set():
            return
        super().set()
        for waiter in self._watchers:
            wake(waiter)

    def watch(self, waiter: asyncio.Future[None]) -> None:
        """Resolve `waiter` when this flag is next set (at once if it is set)."""
        if self.is_set():
            wake(waiter)
        else:
            self._watchers.append(waiter)

    def unwatch(self, waiter: asyncio.Future[None]) -> None:
        if waiter in self._watchers:  # a handful at most: the tasks that sleep
            self._watchers.remove(waiter)
