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
        # Loop time by which the buffered batch is written (its first outcome's arrival
        # plus RECORD_INTERVAL_S), and the timer that wakes the recorder then.
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # When the idle claimer means to look for due rows again (None: not idle).
        self.wake_at: datetime | None = None

    @property
    def pending(self) -> int:
        return len(self._outcomes)

    def finish(self, conv: Conversation, outcome: Outcome) -> None:
        """`conv` leaves the dispatcher with `outcome` (written at the next flush)."""
        self._ctx.state.let_go(conv.id)
        self._outcomes.append(outcome)
        n = len(self._outcomes)
        if n == 1:
            # The first outcome starts a batch, written RECORD_INTERVAL_S later: a timer
            # wakes the recorder then, once (waking it now only to sleep again cost a
            # loop wake-up per batch, one per message at a trickle).
            loop = asyncio.get_running_loop()
            self._due = loop.time() + self._delay()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(self._due, self._ctx.signals.record.set)
        elif n == RECORD_BATCH_MAX:
            self._ctx.signals.record.set()  # a full batch is written at once

    def _delay(self) -> float:
        """How long a new batch waits: RECORD_INTERVAL_S, or, where the store records
        within its claims and the idle claimer wakes within two of those, until
        RECORD_INTERVAL_S after that wake, so the batch rides with the claim (`take`)
        rather than costing a transaction and its wake-ups of its own; the timer then
        only catches a claim that did not happen."""
        if self.wake_at is None or not self._ctx.store.claims_with_record:
            return RECORD_INTERVAL_S
        claim_in = (self.wake_at - self._ctx.clock.now()).total_seconds()
        if claim_in < 0 or claim_in > 2 * RECORD_INTERVAL_S:
            return RECORD_INTERVAL_S
        return claim_in + RECORD_INTERVAL_S

    def take(self) -> list[Outcome]:
        """Every outcome waiting, for the claimer to write in its claim's transaction
        (`Store.record_and_claim`); `put_back` them if that fails."""
        batch, self._outcomes = self._outcomes, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch.sort(key=lambda o: o.conversation.conversation_id)  # lock order, see flush
        return batch

    def put_back(self, batch: list[Outcome]) -> None:
        """A claim carrying `batch` failed (nothing written) or was cancelled (its
        transaction may still have committed): the recorder writes it at once, itself.
        A second write of a written outcome changes nothing that matters, as after a
        cancelled `flush`: it released the leases its conversation writes need."""
        self._outcomes[:0] = batch
        self._due = self._ctx.loop_time()
        self._ctx.signals.record.set()

    def reset(self) -> None:
        self._outcomes = []
        self.wake_at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def flush(self) -> None:
        ctx = self._ctx
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        if self._timer is not None:
            self._timer.cancel()  # a full batch goes before its timer
            self._timer = None
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
        """Sleep until the batch is due (RECORD_INTERVAL_S after its first outcome) or
        full, write it. An idle dispatcher never wakes for this."""
        ctx = self._ctx
        record = ctx.signals.record
        while not ctx.stopping:
            n = len(self._outcomes)
            if n:
                wait = self._due - ctx.loop_time()
                if n >= RECORD_BATCH_MAX or wait <= 0:
                    await self.flush()
                    continue
            else:
                wait = _IDLE_S
            # Decided from the buffer, not the flag: clearing it loses nothing.
            record.clear()
            await ctx.sleep(wait, record)

    def wake_in(self, seconds: float) -> datetime:
        """Note that the claimer sleeps `seconds` from now; returns when it wakes."""
        self.wake_at = self._ctx.clock.now() + timedelta(seconds=seconds)
        return self.wake_at
