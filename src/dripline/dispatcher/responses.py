"""What a send's result does: the success path and every failure path, in one place.

A send ends in exactly one of: accepted (the flow moves on), a failure (the reaction
table decides, `reactions.react`), or a refused reservation (`reconcile.settle`). Each
becomes one outcome for the recorder, and may update the sender's pacing (throttle),
the outage detector, the unknown-code streak and the breaker.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from dripline.dispatcher import outcomes
from dripline.dispatcher.alerts import SenderAlert, sender_alert
from dripline.dispatcher.breaker import Breaker
from dripline.dispatcher.constants import LATENCY_WINDOW
from dripline.dispatcher.context import Context
from dripline.dispatcher.outage import CodeStreak, OutageDetector
from dripline.dispatcher.pacing import SenderPacing
from dripline.dispatcher.reactions import Action, Failure, Reaction, react
from dripline.dispatcher.reconcile import Settle, settle
from dripline.dispatcher.recorder import Recorder
from dripline.flows.base import OutboundMessage
from dripline.flows.purposes import is_reask
from dripline.store.base import Conversation, ReservationResult
from dripline.whatsapp.errors import classify

__all__ = ["Responder", "SendJob"]

log = structlog.get_logger("dripline.dispatcher")

_PAIR_HITS_MAX = 100_000


@dataclass(slots=True)
class SendJob:
    """One send: what, to whom, from which number, when its rate token is good."""

    conv: Conversation
    purpose: str
    message: OutboundMessage
    sender_key: str
    start_at: float  # loop time
    message_id: int = 0


class Responder:
    def __init__(
        self,
        ctx: Context,
        recorder: Recorder,
        pacing: SenderPacing,
        *,
        trip: Callable[[str, float | None], None],
        close_breaker: Callable[[int], None],
        breaker: Breaker,
        on_throttle_streak: Callable[[int], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._recorder = recorder
        self._pacing = pacing
        self._trip = trip
        self._close_breaker = close_breaker
        self._breaker = breaker
        self._on_throttle_streak = on_throttle_streak
        self.outage = OutageDetector()
        self._codes = CodeStreak()
        # 131056 answers per recipient since its last accepted send (Meta's 4^X backoff).
        self._pair_hits: OrderedDict[str, int] = OrderedDict()
        # Recent send latencies for the adaptive policy: a ring, so memory stays flat
        # whatever the policy (an unbounded list grew ~18 MB per 100,000 sends).
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.throttled_since_tick = False

    # ------------------------------------------------------------ accepted
    def on_success(
        self,
        job: SendJob,
        wamid: str,
        sent_at: datetime,
        latency_s: float,
        lag_s: float,
        *,
        wa_id: str | None = None,
    ) -> None:
        ctx = self._ctx
        conv = job.conv
        if self.outage.on_success():
            log.info("API answering again after an outage")
        self._codes.reset()
        self._pair_hits.pop(conv.phone, None)
        self._pacing.on_accept(job.sender_key)
        self.latencies.append(latency_s)
        ctx.observer.on_sent(latency_s, lag_s)
        t = ctx.flows.get(conv.flow).after_send(conv, job.purpose, sent_at)
        self._recorder.finish(
            conv,
            outcomes.sent(
                conv,
                t,
                message_id=job.message_id,
                wamid=wamid,
                sent_at=sent_at,
                latency_s=latency_s,
                wa_id=wa_id,
            ),
        )
        restore = self._breaker.on_success()
        if restore is not None:
            self._close_breaker(restore)

    # ------------------------------------------------------------- failures
    def on_failure(self, job: SendJob, failure: Failure, *, message_id: int | None) -> None:
        ctx = self._ctx
        conv = job.conv
        flow = ctx.flows.get(conv.flow)
        reaction = react(
            failure,
            attempts=conv.attempts,
            max_attempts=ctx.settings.max_attempts,
            delivery=ctx.settings.delivery,
            purpose=job.purpose,
            has_fallback=flow.has_fallback(conv),
            retry_base_s=ctx.settings.retry_base_s,
            retry_cap_s=ctx.settings.retry_cap_s,
            pair_hits=self._pair_hits.get(conv.phone, 0),
            unknown_after_s=ctx.settings.unknown_after_s,
            rng=ctx.rng,
        )
        reaction = self._sender_wide(job, failure, reaction)
        if reaction.action is not Action.THROTTLE:
            self._pacing.on_error(job.sender_key)  # per-number errors (status, metrics)
        alert = self._alert(failure)
        ctx.observer.on_failure(failure.error_class, failure.code, reaction.action.value)
        now = ctx.clock.now()
        if reaction.action is Action.SKIP:
            skipped = job.purpose if is_reask(job.purpose) else "reminder"
            t = dataclasses.replace(flow.after_send(conv, skipped, now), note=reaction.reason)
            msg = outcomes.failed_message(failure, reaction, message_id)
            self._recorder.finish(conv, outcomes.transitioned(conv, t, msg))
            return
        self._recorder.finish(
            conv, outcomes.after_failure(conv, failure, reaction, message_id=message_id, now=now)
        )
        if reaction.action is Action.TRIP:
            code = "" if failure.code is None else f"{failure.code}: "
            self._trip(f"{code}{failure.message}", None)
        elif alert is not None:
            self._trip(alert.reason, alert.probe_after_s)

    def _alert(self, failure: Failure) -> SenderAlert | None:
        """Whether this failure also stops the sender with an alert (alerts.py). The
        message keeps its own reaction: an unknown code still fails it after
        max_attempts, so no code can keep a message probing for ever."""
        if failure.error_class == "unknown":
            self._codes.on_unknown_code(failure.code)
        alert = sender_alert(
            failure.error_class,
            failure.code,
            failure.message,
            unknown_in_a_row=self._codes.count if failure.error_class == "unknown" else 0,
            threshold=self._codes.threshold,
        )
        if alert is not None:
            log.error(
                "sender alert: sending stopped",
                alert=alert.kind.value,
                code=alert.code,
                reason=alert.reason,
            )
            self._ctx.observer.on_alert(alert.kind.value, alert.code, alert.reason)
        return alert

    def _sender_wide(self, job: SendJob, failure: Failure, reaction: Reaction) -> Reaction:
        """What the failure says about the sender number or the API as a whole."""
        ctx = self._ctx
        loop_now = ctx.loop_time()
        cls = failure.error_class
        if cls == "pair_throttle":
            hits = self._pair_hits
            hits[job.conv.phone] = hits.get(job.conv.phone, 0) + 1
            hits.move_to_end(job.conv.phone)
            if len(hits) > _PAIR_HITS_MAX:
                hits.popitem(last=False)
        if reaction.action is Action.THROTTLE:
            self.throttled_since_tick = True
            event = self._pacing.on_throttle(
                job.sender_key, loop_now, failure.retry_after_s, ctx.rng
            )
            if event.new_event:
                if event.streak in (5, 20, 100):
                    log.warning(
                        "sustained throttling",
                        sender=job.sender_key,
                        throttle_events_in_a_row=event.streak,
                        rate_per_s=round(event.rate_per_s, 1),
                    )
                ctx.emit_limits(self._pacing.total_rate())
                if self._on_throttle_streak is not None:
                    self._on_throttle_streak(event.streak)  # the tier may have changed
            return _with_delay(reaction, event.delay_s)
        # Only known-transient errors can mean an outage: an unclassified code repeating
        # must fail its messages (and trip the breaker above), never pause-and-probe
        # forever without charging attempts. A send whose outcome is unknown (a bare
        # 5xx, a timeout) counts too, so an API answering only that pauses the sender
        # instead of turning the whole backlog unknown; its own reaction stays UNKNOWN.
        if cls == "transient":
            verdict = self.outage.on_transient(loop_now)
            if verdict.pause_until is not None:
                if verdict.new_pause:
                    self._pacing.pause_all(verdict.pause_until)
                    log.warning(
                        "API outage suspected: pausing sends",
                        failures_in_a_row=verdict.streak,
                        pause_s=round(verdict.pause_until - loop_now, 2),
                    )
                if reaction.action is not Action.UNKNOWN:
                    delay = verdict.pause_until - loop_now + ctx.rng.uniform(0, 0.5)
                    return Reaction(Action.RETRY, delay, False, "pending", reaction.reason)
        return reaction

    # ------------------------------------------------- refused reservations
    def on_refused(self, job: SendJob, res: ReservationResult) -> None:
        """The message row exists from an earlier attempt: decide without sending."""
        ctx = self._ctx
        conv = job.conv
        decision = settle(
            res, step=conv.step, attempts=conv.attempts, max_attempts=ctx.settings.max_attempts
        )
        if decision.action is Settle.DROP:
            ctx.state.let_go(conv.id)
            return
        if decision.action is Settle.ACCEPTED:
            sent_at = decision.sent_at or ctx.clock.now()
            t = ctx.flows.get(conv.flow).after_send(conv, job.purpose, sent_at)
            self._recorder.finish(conv, outcomes.transitioned(conv, t))
            return
        if decision.action is Settle.GIVE_UP:
            self.fail(conv, decision.reason or "outcome unknown")
            return
        if decision.action is Settle.WAIT:
            ctx.observer.on_failure("transient", None, "unknown")
            when = ctx.clock.now() + timedelta(seconds=ctx.settings.unknown_after_s)
            self._recorder.finish(
                conv,
                outcomes.rescheduled(conv, when, decision.reason, attempts=conv.attempts + 1),
            )
            return
        # A status webhook reported it failed before our own result was written. A
        # window error still gets its template fallback; anything else ends the
        # conversation with the reason, since the row cannot be resent under its key.
        code = decision.error_code
        cls = str(classify(code, None))
        if cls == "window":
            self.on_failure(job, Failure(cls, code, decision.reason or ""), message_id=None)
            return
        prefix = f"{code}: " if code is not None else ""
        self.fail(conv, f"{prefix}delivery failed after the API accepted it")

    def abandon(
        self, job: SendJob, why: str = "lease too short to send; left for the next claim"
    ) -> None:
        """Nothing was sent (the lease is too short or gone, or sending stopped): the
        message row goes back to `pending` and the conversation back to the pool."""
        log.warning(why, conversation_id=job.conv.id)
        self._ctx.observer.on_failure("transient", None, "abandoned")
        self._recorder.finish(job.conv, outcomes.abandoned(job.conv, job.message_id))

    def fail(self, conv: Conversation, reason: str) -> None:
        log.warning("conversation failed", conversation_id=conv.id, reason=reason)
        self._ctx.observer.on_failure("permanent", None, "fail")
        self._recorder.finish(conv, outcomes.failed(conv, reason))


def _with_delay(reaction: Reaction, delay_s: float) -> Reaction:
    return Reaction(
        reaction.action,
        delay_s,
        reaction.counts_attempt,
        reaction.message_status,
        reaction.reason,
    )
