"""One HTTP call: wait for its rate token, send, hand the result to the responder."""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from dripline.dispatcher.context import Context
from dripline.dispatcher.reactions import Failure
from dripline.dispatcher.responses import Responder, SendJob
from dripline.errors import TransportError, WhatsAppError
from dripline.flows.base import OutboundMessage

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


async def send_one(ctx: Context, client: Sender, responder: Responder, job: SendJob) -> None:
    conv = job.conv
    try:
        delay = job.start_at - ctx.loop_time()
        if delay > 0:
            await asyncio.sleep(delay)
        started = ctx.loop_time()
        sent_at = ctx.clock.now()
        lag_s = (sent_at - (conv.next_send_at or sent_at)).total_seconds()
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
        responder.on_success(job, result.wamid, sent_at, ctx.loop_time() - started, lag_s)
    except asyncio.CancelledError:
        # Shutdown deadline passed mid-call: the row stays `sending` and becomes
        # `unknown` when the conversation is next claimed.
        raise
    except Exception as exc:  # a bug in a flow or the client must not kill the worker
        log.exception("unexpected send error", conversation_id=conv.id)
        failure = Failure("transient", None, f"unexpected error: {exc!r}", maybe_sent=True)
        responder.on_failure(job, failure, message_id=job.message_id)
    finally:
        ctx.state.in_flight -= 1
        ctx.signals.slot.set()
        ctx.observer.on_in_flight(ctx.state.in_flight)
