"""What the dispatcher's tasks share: configuration, the run's mutable state, the events
that wake them, and three helpers every loop needs (spawn, sleep, retry a store call).

The tasks (claimer, launcher, senders, recorder, heartbeat, controller) each live in
their own module and talk only through this context; none calls into another's loop.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import structlog

from dripline.clock import Clock
from dripline.dispatcher.constants import DB_RETRY_BASE_S, DB_RETRY_CAP_S
from dripline.dispatcher.share import ShareGate
from dripline.dispatcher.stats import DispatchObserver, DispatchStats
from dripline.dispatcher.ticks import StartTicks
from dripline.errors import TransientStoreError
from dripline.flows.base import FlowRegistry
from dripline.settings import Policy, Settings
from dripline.store.base import Conversation, Store
from dripline.wake import Flag, wake
from dripline.whatsapp.throughput import TierRate

__all__ = ["Context", "RunState", "Signals"]

log = structlog.get_logger("dripline.dispatcher")

T = TypeVar("T")


@dataclass
class RunState:
    """Mutable per-run bookkeeping."""

    queue: deque[Conversation] = field(default_factory=deque)
    # Leased and not yet written back: queued, launching, in flight or awaiting record.
    held: dict[int, Conversation] = field(default_factory=dict)
    # Until when each held lease is known live (set at the claim, pushed out by each
    # heartbeat that extended it; gone once an extension failed). See `send_one`.
    lease_until: dict[int, datetime] = field(default_factory=dict)
    in_flight: int = 0  # HTTP calls under way: each holds a concurrency slot
    launching: int = 0  # taken from the queue, not yet reserved
    starting: int = 0  # reserved, waiting for its rate token or a slot (holds none)
    cron_tick_done: bool = False

    def busy(self) -> bool:
        return bool(self.queue) or self.in_flight > 0 or self.launching > 0 or self.starting > 0

    def hold(self, conv: Conversation) -> None:
        self.held[conv.id] = conv
        if conv.lease_expires_at is not None:
            self.lease_until[conv.id] = conv.lease_expires_at

    def let_go(self, conversation_id: int) -> None:
        """Nothing more to write for this conversation (its outcome is buffered, or it
        is another worker's now)."""
        self.held.pop(conversation_id, None)
        self.lease_until.pop(conversation_id, None)


class Signals:
    """The events the tasks wait on."""

    def __init__(self) -> None:
        self.stop = Flag()
        self.queued = Flag()  # the queue gained items
        self.room = Flag()  # the queue fell below the low-water mark
        self.slot = Flag()  # a concurrency slot freed
        self.record = Flag()  # outcomes waiting to be written
        self.breaker_closed = Flag()  # sending allowed
        self.resched = Flag()  # our own write made a row due sooner
        # The launcher had to wait (a token, a slot, the gate) with sends queued, since
        # it last ran dry: a backlog, during which the heartbeat looks for joiners.
        self.backlog = Flag()
        # Sends whose token is due, waiting for a slot, first come first served: one
        # freed slot wakes one of them (an event would wake them all, each time).
        self.slot_waiters: deque[asyncio.Future[None]] = deque()
        # The launcher waits for `slot` only until calls and reserved sends number at
        # most this (`slots.launch_wake`): waking it for every freed slot cost a task
        # switch per send while it had no use for one slot.
        self.launch_at = 1 << 30
        self.breaker_closed.set()

    def slots_freed(self, free: int, busy: int = -1) -> None:
        """`free` slots are open now: wake that many waiting sends, and the launcher if
        `busy` (calls and reserved sends; -1: unknown) is down to its `launch_at`."""
        waiters = self.slot_waiters
        while free > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
        if busy <= self.launch_at:
            self.slot.set()

    def reset(self) -> None:
        for event in (self.stop, self.queued, self.room, self.resched, self.backlog):
            event.clear()
        self.breaker_closed.set()

    def wake_all(self) -> None:
        """Every waiter re-checks the stop event (graceful shutdown)."""
        for event in (self.queued, self.room, self.slot, self.record, self.breaker_closed):
            event.set()
        self.slots_freed(len(self.slot_waiters))


@dataclass
class Context:
    store: Store
    flows: FlowRegistry
    settings: Settings
    clock: Clock
    observer: DispatchObserver
    stats: DispatchStats
    rng: random.Random
    worker_id: str
    policy: Policy
    batch_limit: int
    concurrency: int
    rate_share: float  # this worker's share of the configured rate
    gate: ShareGate = field(default_factory=lambda: ShareGate(0.0, 0.0, always_open=True))
    state: RunState = field(default_factory=RunState)
    signals: Signals = field(default_factory=Signals)
    tasks: dict[asyncio.Task[Any], str] = field(default_factory=dict)
    ticks: StartTicks = field(default_factory=StartTicks)  # sends' start times
    # The global rate per number (workers split it): the operator's, or the tier's.
    rate_per_s: float = 0.0
    tier: TierRate | None = None  # the last throughput tier read (dispatcher/tier.py)

    @property
    def stopping(self) -> bool:
        return self.signals.stop.is_set()

    def loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Start a named task; kept (in creation order) until it finishes."""
        task = asyncio.ensure_future(coro)
        task.set_name(f"dripline-{name}")
        self.tasks[task] = name
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self.tasks.pop(task, None)

    async def sleep(self, seconds: float, *events: asyncio.Event) -> None:
        """Sleep, waking early on stop or any of `events`.

        One future and one timer per sleep: a `Flag` wakes the future itself; any other
        event (a store's own) costs a task that waits on it."""
        if seconds <= 0:
            return
        watched = (self.signals.stop, *events)
        if any(e.is_set() for e in watched):
            await asyncio.sleep(0)  # a loop that sleeps on a set event still yields
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, wake, waiter)
        helpers: list[asyncio.Task[Any]] = []
        for event in watched:
            if isinstance(event, Flag):
                event.watch(waiter)
            else:
                helper = asyncio.ensure_future(event.wait())
                helper.add_done_callback(lambda _: wake(waiter))
                helpers.append(helper)
        try:
            await waiter
        finally:
            timer.cancel()
            for event in watched:
                if isinstance(event, Flag):
                    event.unwatch(waiter)
            for helper in helpers:
                helper.cancel()

    async def retry_db(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """Run a store call, retrying with backoff while the database is unreachable."""
        attempt = 0
        while True:
            try:
                return await op()
            except (TransientStoreError, OSError) as exc:
                delay = min(DB_RETRY_CAP_S, DB_RETRY_BASE_S * 2**attempt)
                delay *= self.rng.uniform(0.5, 1.0)
                attempt += 1
                log.warning(
                    "database unavailable, retrying",
                    what=what,
                    error=str(exc),
                    retry_in_s=round(delay, 2),
                    attempt=attempt,
                )
                if self.stopping and attempt > 5:
                    raise
                await asyncio.sleep(delay)

    def emit_limits(self, rate_per_s: float) -> None:
        self.observer.on_limits(self.concurrency, rate_per_s)
