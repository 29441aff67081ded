"""Start ticks: the sends waiting for their rate tokens wake together, a few per timer.

At the rate limit each send's token falls due START_TICK_S / rate apart (1 ms at
1,000/s), and a send that slept to its own token's time cost one timer and one event
loop iteration per message: at full speed on a quiet machine, each iteration found a
single send to run. Here a send's start is rounded *up* to the next multiple of
START_TICK_S and every send in the same tick waits on one timer, so the loop wakes once
per tick for all of them.

Rounding up never breaks the rate: it is monotone, so any one-second window of start
times holds the starts of tokens from a one-second window of token times, no more than
the bucket allows (`ratelimit.RateLimiter`; `slots.StartWindow` still counts them). A
send starts at most START_TICK_S after its token, and only a send that had to wait for
its token at all: one whose token is already due starts at once, as before (a trickle's
sends never wait here).
"""

from __future__ import annotations

import asyncio
import math

from dripline.dispatcher.constants import START_TICK_S

__all__ = ["StartTicks"]


class StartTicks:
    """One timer per tick with waiting sends; each send has its own future (cancelling
    one send's wait must not wake or cancel the others')."""

    __slots__ = ("_tick", "_waiting")

    def __init__(self, tick_s: float = START_TICK_S) -> None:
        self._tick = tick_s
        # Tick number -> the futures of the sends that start at it.
        self._waiting: dict[int, list[asyncio.Future[None]]] = {}

    def start_time(self, at: float) -> float:
        """When a send whose token is due at `at` starts (loop time): the tick at or
        after it."""
        return math.ceil(at / self._tick) * self._tick

    async def wait_until(self, at: float) -> None:
        """Sleep until the tick at or after `at` (loop time); at once if `at` is past."""
        loop = asyncio.get_running_loop()
        if at <= loop.time():
            return
        n = math.ceil(at / self._tick)
        waiter: asyncio.Future[None] = loop.create_future()
        futures = self._waiting.get(n)
        if futures is None:
            futures = self._waiting[n] = []
            loop.call_at(n * self._tick, self._fire, n)
        futures.append(waiter)
        await waiter

    def _fire(self, n: int) -> None:
        for waiter in self._waiting.pop(n, ()):
            if not waiter.done():  # a cancelled send's
                waiter.set_result(None)
