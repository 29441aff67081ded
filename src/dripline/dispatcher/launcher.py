"""The launcher: turns queued claims into HTTP calls at the sender's rate.

For each queued conversation it takes a rate token, asks the flow what to send
(`prepare`), and reserves the messages rows of a group of sends in one
transaction just before their calls (`reserve_and_start`). Conversations that need no
send (quiet hours, a reply timeout, pair pacing) go straight to the recorder. Each
reserved send becomes its own task (`send.send_one`), which takes its concurrency slot
only when its token is due (`slots`); no database connection is held while a call is in
flight.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import structlog

from dripline.dispatcher import outcomes
from dripline.dispatcher.claimer import low_water
from dripline.dispatcher.constants import GROUP_SPAN_S, MAX_GROUP, RESERVE_LEAD_S
from dripline.dispatcher.context import Context
from dripline.dispatcher.pacing import SenderPacing
from dripline.dispatcher.policies import claim_horizon
from dripline.dispatcher.ratelimit import RecipientPacer
from dripline.dispatcher.reconcile import (
    evidence_deadline,
    proven_unaccepted,
    unknowns,
)
from dripline.dispatcher.recorder import Recorder
from dripline.dispatcher.responses import Responder, SendJob
from dripline.dispatcher.send import Sender, send_one
from dripline.dispatcher.senderqueue import first_ready
from dripline.dispatcher.slots import launch_headroom, launch_wake, may_take
from dripline.dispatcher.window import Choice, decide
from dripline.errors import DriplineError
from dripline.flows.base import Flow
from dripline.flows.purposes import is_timeout
from dripline.inbox.intake import INTAKE_TOLERANCE_S
from dripline.settings import Delivery
from dripline.store.base import Conversation, Reservation, ReservationResult

__all__ = ["Launcher"]

log = structlog.get_logger("dripline.dispatcher")


class Launcher:
    def __init__(
        self,
        ctx: Context,
        client: Sender,
        pacing: SenderPacing,
        recorder: Recorder,
        responder: Responder,
    ) -> None:
        self._ctx = ctx
        self._client = client
        self._pacing = pacing
        self._recorder = recorder
        self._responder = responder
        self._recipients = RecipientPacer(ctx.settings.pair_interval_s)
        self._default_sender = ctx.settings.whatsapp_phone_number_id
        # Several numbers: a conversation waiting for its number's token does not hold
        # back another number's (senderqueue.py). One number: the head is always next.
        self._several = len(ctx.settings.sender_ids) > 1

    def sender_key(self, conv: Conversation) -> str:
        return conv.sender or self._default_sender

    def _other_ready(self, now_m: float, horizon: float) -> int:
        """The queue index of the first conversation whose number has a token within
        `horizon` (senderqueue.py), or 0 for none."""
        found = first_ready(
            self._ctx.state.queue,
            self.sender_key,
            lambda key: self._pacing.peek(key, now_m) <= horizon,
            len(self._ctx.settings.sender_ids),
        )
        return found or 0

    async def run(self) -> None:
        ctx = self._ctx
        state, signals = ctx.state, ctx.signals
        while True:
            if not state.queue:
                if ctx.stopping:
                    return
                signals.queued.clear()
                signals.backlog.clear()
                calls, began = state.in_flight + state.starting, ctx.loop_time()
                await signals.queued.wait()
                if calls and ctx.stats.awake_since <= began and state.queue:
                    # Ran dry with calls under way, and refilled by a claimer that had
                    # work all along: a gap in the pipeline, not a pause in the work.
                    ctx.stats.on_dry(ctx.loop_time() - began)
                continue
            if ctx.stopping:
                return
            if not signals.breaker_closed.is_set():
                signals.backlog.set()
                await signals.breaker_closed.wait()
                continue
            if not ctx.gate.may_send(ctx.loop_time()):
                # Our share is in doubt (heartbeats failing, or rejoining others).
                signals.backlog.set()
                await ctx.sleep(ctx.settings.heartbeat_s / 4)
                continue
            group = await self._take_group()
            if group:
                state.launching = len(group)
                try:
                    await self._reserve_and_start(group)
                finally:
                    state.launching = 0

    async def _take_group(self) -> list[SendJob]:
        """Pop the sends that may start within GROUP_SPAN_S of the first, while the
        sends reserved and in flight stay within the slots plus `launch_headroom`."""
        ctx = self._ctx
        state = ctx.state
        group: list[SendJob] = []
        horizon = RESERVE_LEAD_S
        headroom = launch_headroom(ctx.concurrency, ctx.rate_share)
        while state.queue and len(group) < MAX_GROUP and not ctx.stopping:
            if not may_take(
                state.in_flight,
                state.starting,
                len(group),
                len(state.queue),
                ctx.concurrency,
                headroom,
            ):
                if group:
                    break
                ctx.signals.slot.clear()
                ctx.signals.backlog.set()  # sends wait for slots: a backlog
                ctx.signals.launch_at = launch_wake(ctx.concurrency, headroom, len(state.queue))
                try:
                    await ctx.sleep(1.0, ctx.signals.slot)
                finally:
                    ctx.signals.launch_at = 1 << 30
                continue
            conv = state.queue[0]
            key = self.sender_key(conv)
            now_m = ctx.loop_time()
            wait = self._pacing.peek(key, now_m)
            index = 0
            if wait > horizon and self._several:
                # Another number's conversation further back may have its token now.
                index = self._other_ready(now_m, horizon)
                if index:
                    conv = state.queue[index]
                    key = self.sender_key(conv)
                    wait = self._pacing.peek(key, now_m)
            if wait > horizon:
                if group:
                    break
                # Wait for the token outside any slot, then look again (at least 1 ms:
                # a wait that rounds to nothing would spin). The rate binds: a backlog.
                ctx.signals.backlog.set()
                await ctx.sleep(max(wait - RESERVE_LEAD_S, 0.001))
                continue
            if not group:
                horizon = wait + GROUP_SPAN_S
            if index:
                del state.queue[index]
            else:
                state.queue.popleft()
            claim_s = claim_horizon(self._pacing.workers)
            if len(state.queue) < low_water(ctx.batch_limit, ctx.rate_share, claim_s):
                ctx.signals.room.set()
            job = self._prepare(conv, key, now_m)
            if job is None:
                continue
            ready = self._recipients.ready_at(conv.phone, now_m)
            if ready > now_m + horizon:
                when = ctx.clock.now() + timedelta(seconds=ready - now_m)
                self._recorder.finish(
                    conv,
                    outcomes.rescheduled(conv, when, "pair pacing: recipient was sent to recently"),
                )
                continue
            # Never before the recipient's pair interval is over: the token is taken for
            # that time (taking it now and starting later would bunch sends up).
            at = max(now_m, ready)
            job.start_at = at + self._pacing.reserve(key, at)
            self._recipients.mark(conv.phone, job.start_at)
            group.append(job)
        return group

    def _prepare(self, conv: Conversation, key: str, now_m: float) -> SendJob | None:
        """Resolve what to send; conversations needing no send are recorded directly."""
        ctx = self._ctx
        now = ctx.clock.now()
        try:
            flow = ctx.flows.get(conv.flow)
            quiet = flow.quiet_until(conv, now)
            if quiet is not None and quiet > now:
                self._recorder.finish(conv, outcomes.rescheduled(conv, quiet))
                return None
            if is_timeout(conv.purpose):
                self._recorder.finish(conv, outcomes.transitioned(conv, flow.on_timeout(conv, now)))
                return None
            choice = decide(
                conv,
                flow,
                now,
                window_s=ctx.settings.window_s,
                margin_s=ctx.settings.window_margin_s,
                step_label=_step_label(flow, conv.step),
            )
        except DriplineError as exc:
            self._responder.fail(conv, f"flow error: {exc}")
            return None
        if choice.choice is Choice.FAIL:
            self._responder.fail(conv, choice.reason or "24-hour window closed")
            return None
        if choice.choice is Choice.SKIP:
            t = flow.after_send(conv, conv.purpose, now)
            self._recorder.finish(
                conv, outcomes.transitioned(conv, dataclasses.replace(t, note=choice.reason))
            )
            return None
        assert choice.message is not None
        if choice.purpose != conv.purpose:
            # The template replaces the question: a retry or an unknown outcome comes
            # back as the template's (its own row, its own evidence), never the text's.
            conv = _with_purpose(conv, choice.purpose)
        return SendJob(conv, choice.purpose, choice.message, key, now_m)

    async def _reserve(self, group: list[SendJob], *, resend: bool) -> list[ReservationResult]:
        ctx = self._ctx
        now = ctx.clock.now()
        reservations = [
            Reservation(
                conversation_id=j.conv.id,
                step=j.conv.step,
                purpose=j.purpose,
                due_at=j.conv.next_send_at,
                sender=j.conv.sender,
                resend_unknown=resend,
            )
            for j in group
        ]
        return await ctx.retry_db(
            lambda: ctx.store.reserve(reservations, ctx.worker_id, now), "reserve"
        )

    async def _reserve_and_start(self, group: list[SendJob]) -> None:
        ctx = self._ctx
        group.sort(key=lambda j: j.conv.id)  # lock order, see Recorder.flush
        at_least_once = ctx.settings.delivery is Delivery.AT_LEAST_ONCE
        results = await self._reserve(group, resend=at_least_once)
        refused = [r for r in results if not r.ok]
        proven = await self._proven(refused) if refused else set()
        if proven:
            again = await self._reserve([j for j in group if j.conv.id in proven], resend=True)
            retried = {r.conversation_id: r for r in again}
            results = [retried.get(r.conversation_id, r) for r in results]
        now_m = ctx.loop_time()
        for job, res in zip(group, results, strict=True):
            if res.ok:
                job.message_id = res.message_id
                if job.start_at < now_m - RESERVE_LEAD_S:
                    # The reservation outlasted the token (the database was slow or
                    # down): starting every send of the group now would burst past the
                    # rate, so each takes a fresh token.
                    job.start_at = now_m + self._pacing.reserve(job.sender_key, now_m)
                ctx.state.starting += 1
                ctx.spawn(send_one(ctx, self._client, self._responder, self._pacing, job), "send")
            else:
                self._responder.on_refused(job, res)

    async def _proven(self, refused: list[ReservationResult]) -> set[int]:
        """Conversation ids whose unknown sends the evidence shows were never accepted
        (the rule: `reconcile.proven_unaccepted`)."""
        ctx = self._ctx
        candidates = unknowns(refused)
        if not candidates:
            return set()
        now = ctx.clock.now()
        before = evidence_deadline(now, ctx.settings.unknown_after_s)
        wanted = [(c.message_id, c.reserved_at) for c in candidates]
        evidence = await ctx.retry_db(
            lambda: ctx.store.status_evidence(wanted, before), "status evidence"
        )
        if not evidence:
            return set()
        since = min(c.reserved_at for c in candidates)
        uptime = await ctx.retry_db(lambda: ctx.store.intake_uptime(since), "intake uptime")
        inbox = await ctx.retry_db(ctx.store.inbox_backlog, "inbox backlog")
        proven = set(
            proven_unaccepted(
                candidates,
                evidence,
                uptime,
                oldest_waiting_at=inbox.oldest_waiting_at,
                margin_s=ctx.settings.unknown_after_s,
                tolerance_s=INTAKE_TOLERANCE_S,
            )
        )
        if proven:
            log.info("resending sends that webhooks show were never accepted", count=len(proven))
        return proven


_FIELDS = tuple(f.name for f in dataclasses.fields(Conversation))
_new = object.__new__
_set = object.__setattr__  # a frozen dataclass's own __init__ sets fields this way


def _with_purpose(conv: Conversation, purpose: str) -> Conversation:
    """`dataclasses.replace(conv, purpose=purpose)` at half its cost (3.4 against 7 us,
    measured alone): every send outside the 24-hour window takes this path. Copies
    every field, so one added to `Conversation` later is copied too."""
    new = _new(Conversation)
    for name in _FIELDS:
        _set(new, name, getattr(conv, name))
    _set(new, "purpose", purpose)
    return new


def _step_label(flow: Flow, step: int) -> str:
    questions = flow.questions()
    if 0 <= step < len(questions):
        return f"step {step + 1} ({questions[step].id})"
    return f"step {step + 1}"
