"""The webhook channel from Meta to our server: batched, delayed, duplicated, reordered,
lost and redelivered.

Meta POSTs changes in batches, retries a failed delivery with backoff (for days; here
within the run), may deliver one twice, and does not promise order. `post` queues a
change due at a time; a flusher groups what is due into one body per delivery, and
each delivery is retried until the server takes it (`deliver` returns True).
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dripline.sim.config import SimConfig
from dripline.sim.meta import webhook_body
from dripline.sim.trace import Trace

__all__ = ["WebhookChannel"]

_RETRY_CAP_S = 20.0


@dataclass(order=True, slots=True)
class _Change:
    due: float
    seq: int
    value: dict[str, Any] = field(compare=False)
    label: str = field(compare=False)


class WebhookChannel:
    def __init__(
        self,
        cfg: SimConfig,
        rng: random.Random,
        trace: Trace,
        deliver: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._cfg = cfg
        self._rng = rng
        self._trace = trace
        self._deliver = deliver
        self._heap: list[_Change] = []
        self._seq = 0
        self._in_flight = 0
        self._posts: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.delivered = 0
        self.failed_posts = 0

    @property
    def idle(self) -> bool:
        return not self._heap and self._in_flight == 0

    def post(self, value: dict[str, Any], delay_s: float, label: str) -> None:
        """Queue one change (a status or an inbound message) due `delay_s` from now."""
        loop = asyncio.get_running_loop()
        if self._rng.random() < self._cfg.p_webhook_reorder:
            delay_s += self._rng.uniform(0.0, 5.0)  # held back: later changes overtake it
        self._seq += 1
        heapq.heappush(self._heap, _Change(loop.time() + delay_s, self._seq, value, label))
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._heap[0].due - loop.time()
            if wait > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            batch: list[_Change] = []
            while self._heap and self._heap[0].due <= loop.time():
                batch.append(heapq.heappop(self._heap))
                if len(batch) >= self._cfg.webhook_batch_max:
                    break
            copies = 2 if self._rng.random() < self._cfg.p_webhook_dup else 1
            for _ in range(copies):
                self._in_flight += 1
                task = loop.create_task(self._post(batch))
                self._posts.add(task)
                task.add_done_callback(self._posts.discard)

    async def _post(self, batch: list[_Change]) -> None:
        loop = asyncio.get_running_loop()
        body = webhook_body([c.value for c in batch])
        labels = ",".join(c.label for c in batch)
        delay = 1.0
        try:
            while True:
                lost = self._rng.random() < self._cfg.p_webhook_lost
                ok = False if lost else await self._deliver(body)
                if ok:
                    self.delivered += 1
                    self._trace.add(loop.time(), f"webhook delivered [{labels}]")
                    return
                self.failed_posts += 1
                # A POST lost in transit while our receiver is up is retried within the
                # evidence margin (dripline's documented assumption about Meta; see
                # docs/reliability.md); one the receiver refused backs off further.
                wait = min(delay, self._cfg.unknown_after_s / 2) if lost else delay
                self._trace.add(loop.time(), f"webhook failed, retry in {wait:.1f}s [{labels}]")
                await asyncio.sleep(wait * self._rng.uniform(0.5, 1.0))
                delay = min(_RETRY_CAP_S, delay * 2)
        finally:
            self._in_flight -= 1
