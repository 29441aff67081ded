"""One HTTP call: wait for its rate token, then a concurrency slot (held only for the
call: freed the moment its answer is in, `whatsapp/answered.py`), send, hand the result
to the responder."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Protocol

import structlog

from dripline.dispatcher.context import Context
from dripline.dispatcher.pacing import SenderPacing
from dripline.dispatcher.reactions import Failure
from dripline.dispatcher.responses import Responder, SendJob
from dripline.errors import TransportError, WhatsAppError
from dripline.flows.base import OutboundMessage
from dripline.settings import SEND_LEASE_MARGIN_S
from dripline.whatsapp.answered import ON_ANSWER

__all__ = ["SendResultLike", "Sender", "send_one"]

log = structlog.get_logger("dripline.dispatcher")


class SendResultLike(Protocol):
    @property
    def wamid(self) -> str: ...


class Sender(Protocol):
    """The part of the Cloud API client the dispatcher uses."""

    async def send(
        self,
        to: str,
        message: OutboundMessage,
        *,
        sender: str | None = None,
        callback_data: str | None = None,
    ) -> SendResultLike: ...


def _lease_outlives_the_call(ctx: Context, conversation_id: int, now: datetime) -> bool:
    """Fencing: start a call only if this worker's lease outlives its read timeout.

    A worker that was paused (a long GC pause, a partition from the database) may wake
    with leases that lapsed meanwhile: another worker may have re-claimed the
    conversation, or the inbox processor applied a STOP. Its heartbeat then failed to
    extend them and forgot them (`Heartbeat._extend`); an old-enough expiry means the
    same. Either way the send must not start."""
    until = ctx.state.lease_until.get(conversation_id)
    if until is None:
        return False
    margin = ctx.settings.http_read_timeout_s + SEND_LEASE_MARGIN_S
    return (until - now).total_seconds() > margin


async def _take_slot(ctx: Context, pacing: SenderPacing, job: SendJob) -> bool:
    """Wait for a concurrency slot (first come, first served), then for the number's
    start window (`slots.StartWindow`); False if the dispatcher stopped meanwhile.
    Holds the slot on True."""
    state, signals = ctx.state, ctx.signals
    while not (state.in_flight < ctx.concurrency and not signals.slot_waiters):
        if ctx.stopping:
            return False
        waiter = asyncio.get_running_loop().create_future()
        signals.slot_waiters.append(waiter)
        await waiter
        if ctx.stopping:
            return False
        if state.in_flight < ctx.concurrency:
            break  # woken for a freed slot: it is this send's
    state.starting -= 1
    state.in_flight += 1
    ctx.observer.on_in_flight(state.in_flight)
    ctx.stats.on_calls(state.in_flight, ctx.loop_time())
    wait = pacing.start_wait(job.sender_key, ctx.loop_time())
    while wait > 0:  # a timed wait, not a condition another task signals
        await asyncio.sleep(wait)
        wait = pacing.start_wait(job.sender_key, ctx.loop_time())
    return True


class _Slot:
    """A send's hold on its concurrency slot, freed once: by the transport when a 2xx
    answer is in (`ON_ANSWER`; an error waits for the responder, which may open the
    breaker or pause the number first), else when the send ends."""

    __slots__ = ("_ctx", "held")

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.held = False

    def free(self) -> None:
        if not self.held:
            return
        self.held = False
        ctx = self._ctx
        state = ctx.state
        state.in_flight -= 1
        ctx.observer.on_in_flight(state.in_flight)
        ctx.stats.on_calls(state.in_flight, ctx.loop_time())
        ctx.signals.slots_freed(1, state.in_flight + state.starting)

    def on_answer(self, status: int) -> None:
        if 200 <= status < 300:
            self.free()


async def send_one(
    ctx: Context, client: Sender, responder: Responder, pacing: SenderPacing, job: SendJob
) -> None:
    conv = job.conv
    slotted = False
    slot = _Slot(ctx)
    try:
        await ctx.ticks.wait_until(job.start_at)  # with the other sends of its tick
        slotted = slot.held = await _take_slot(ctx, pacing, job)
        sent_at = ctx.clock.now()
        if not slotted or not ctx.signals.breaker_closed.is_set():
            # Stopped, or the breaker opened while this send waited (only the calls
            # already under way when it opened may be refused): never sent.
            responder.abandon(job, "sending stopped before its call")
            return
        if not ctx.gate.may_send(ctx.loop_time()) or not _lease_outlives_the_call(
            ctx, conv.id, sent_at
        ):
            responder.abandon(job)
            return
        started = ctx.loop_time()
        lag_s = (sent_at - (conv.next_send_at or sent_at)).total_seconds()
        answered = ON_ANSWER.set(slot.on_answer)
        try:
            result = await client.send(
                conv.phone, job.message, sender=conv.sender, callback_data=str(job.message_id)
            )
        except TransportError as exc:
            failure = Failure("transient", None, str(exc), maybe_sent=exc.maybe_sent)
            responder.on_failure(job, failure, message_id=job.message_id)
            return
        except WhatsAppError as exc:
            failure = Failure(exc.error_class, exc.code, str(exc), retry_after_s=exc.retry_after_s)
            responder.on_failure(job, failure, message_id=job.message_id)
            return
        finally:
            ON_ANSWER.reset(answered)
        responder.on_success(
            job,
            result.wamid,
            sent_at,
            ctx.loop_time() - started,
            lag_s,
            wa_id=getattr(result, "wa_id", None),  # a Sender may not report one
        )
    except asyncio.CancelledError:
        # Shutdown deadline passed mid-call: the row stays `sending` and becomes
        # `unknown` when the conversation is next claimed.
        raise
    except Exception as exc:  # a bug in a flow or the client must not kill the worker
        log.exception("unexpected send error", conversation_id=conv.id)
        failure = Failure("transient", None, f"unexpected error: {exc!r}", maybe_sent=True)
        responder.on_failure(job, failure, message_id=job.message_id)
    finally:
        state = ctx.state
        if slotted:
            slot.free()  # unless the answer freed it already
        else:
            state.starting -= 1
            ctx.signals.slots_freed(0, state.in_flight + state.starting)
