"""The recorder: every outcome is buffered and written in batches, one transaction each.

A write also releases the conversations' leases, and applies only while this worker
still holds each lease (`Store.record_results`). Nothing buffered is ever dropped: a
failed flush puts its batch back.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from dripline.dispatcher.constants import RECORD_BATCH_MAX, RECORD_INTERVAL_S
from dripline.dispatcher.context import Context
from dripline.store.base import Conversation, Outcome
from dripline.store.schema import ACTIVE_STATES

__all__ = ["Recorder"]

_IDLE_S = 3600.0  # an idle recorder waits for an outcome (or stop), not for a timer


class Recorder:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._outcomes: list[Outcome] = []
        # When the idle claimer means to look for due rows again (None: not idle).
        self.wake_at: datetime | None = None

    @property
    def pending(self) -> int:
        return len(self._outcomes)

    def finish(self, conv: Conversation, outcome: Outcome) -> None:
        """`conv` leaves the dispatcher with `outcome` (written at the next flush)."""
        self._ctx.state.let_go(conv.id)
        self._outcomes.append(outcome)
        if len(self._outcomes) in (1, RECORD_BATCH_MAX):
            # The first outcome starts a batch; a full batch is written at once.
            self._ctx.signals.record.set()

    def reset(self) -> None:
        self._outcomes = []
        self.wake_at = None

    async def flush(self) -> None:
        ctx = self._ctx
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        # Every write takes row locks in id order, so two of our transactions (a record
        # and a heartbeat's lease extension) can never deadlock each other.
        batch.sort(key=lambda o: o.conversation.conversation_id)
        started = time.perf_counter()
        try:
            await ctx.retry_db(
                lambda: ctx.store.record_results(batch, ctx.worker_id, ctx.clock.now()),
                "record results",
            )
        except BaseException:
            self._outcomes[:0] = batch  # nothing recorded is ever dropped
            raise
        ctx.observer.on_record(len(batch), time.perf_counter() - started)
        self._note_reschedules(batch)

    def _note_reschedules(self, batch: list[Outcome]) -> None:
        """Wake the claimer if a row we just wrote falls due before it meant to look."""
        wake_at = self.wake_at
        if wake_at is None:
            return
        times = [
            o.conversation.next_send_at
            for o in batch
            if o.conversation.next_send_at is not None and o.conversation.state in ACTIVE_STATES
        ]
        if not times or min(times) >= wake_at:
            return
        soonest = min(times)
        delay = (soonest - self._ctx.clock.now()).total_seconds()
        resched = self._ctx.signals.resched
        if delay <= 0:
            resched.set()
        else:
            self.wake_at = soonest
            asyncio.get_running_loop().call_later(delay, resched.set)

    async def run(self) -> None:
        """Sleep until an outcome arrives, give others RECORD_INTERVAL_S to join it (or
        until the batch is full), write them. An idle dispatcher never wakes for this."""
        ctx = self._ctx
        record = ctx.signals.record
        while not ctx.stopping:
            if not self._outcomes:
                record.clear()
                await ctx.sleep(_IDLE_S, record)
                continue
            if len(self._outcomes) < RECORD_BATCH_MAX:
                record.clear()
                await ctx.sleep(RECORD_INTERVAL_S, record)
            await self.flush()

    def wake_in(self, seconds: float) -> datetime:
        """Note that the claimer sleeps `seconds` from now; returns when it wakes."""
        self.wake_at = self._ctx.clock.now() + timedelta(seconds=seconds)
        return self.wake_at
