"""The Cloud API webhook: verification (GET) and the durable intake (POST).

POST /webhook, in order, before anything is parsed:

1. the body is read with a size limit (413 above `webhook_max_body_bytes`);
2. `X-Hub-Signature-256` is checked against the raw bytes (HMAC-SHA256 with the app
   secret, constant time): 401 on a missing or wrong signature;
3. the raw body is committed to the `inbox` table, and only then 200 is answered, so a
   crash after the 200 loses nothing.

A correctly signed body is always stored and answered 200, even when it turns out to
be malformed: the signature proves Meta (or whoever holds the app secret) sent it, a
4xx would only make Meta redeliver it for days, and the stored copy is evidence for the
operator. The processor marks such rows with an error (see `dripline.inbox`).

Writes are group-committed: concurrent POSTs wait on one shared transaction, so a burst
of deliveries costs a few commits, not one each, and the median acknowledgement stays
at one commit's latency.

The queue of bodies waiting for a commit is bounded (`webhook_max_queued_bytes`): when
the database falls behind, further POSTs are answered 503 with `Retry-After` at once,
and Meta redelivers them later, rather than the server holding them all in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from dripline.clock import Clock
from dripline.errors import DriplineError
from dripline.settings import Settings
from dripline.store import Store
from dripline.whatsapp.webhooks import SIGNATURE_HEADER, verify_signature

__all__ = ["InboxFull", "InboxWriter", "build_webhook_router"]

log = structlog.get_logger(__name__)

# Bodies per intake transaction. Meta sends up to 1,000 updates per body, so a full
# group is at most a few MB of text.
MAX_GROUP = 256
# Seconds a refused sender is asked to wait (Meta retries with its own backoff anyway).
RETRY_AFTER_S = 5


class InboxFull(Exception):
    """The writer's queue is at its limit: answer 503 and let Meta redeliver."""


class InboxWriter:
    """Commits webhook bodies to the inbox in groups; `write` returns once durable."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        on_commit: Callable[[], None] | None = None,
        *,
        max_queued_bytes: int = 64 * 1_048_576,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_commit = on_commit
        self._max_queued = max_queued_bytes
        self._queued = 0  # characters of the bodies in _queue and in the group being written
        self._queue: list[tuple[str, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the writer task (in the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="dripline-inbox-writer"
            )

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def write(self, body: str) -> None:
        """Queue `body` and wait until its transaction committed (raises if it failed).
        Raises InboxFull at once when the queue is at its limit (one body always fits)."""
        if self._closing or self._task is None:
            raise RuntimeError("the inbox writer is not running")
        if self._queued and self._queued + len(body) > self._max_queued:
            raise InboxFull(f"{self._queued} characters waiting to be stored")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((body, future))
        self._queued += len(body)
        self._wake.set()
        try:
            await future
        finally:
            self._queued -= len(body)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            try:
                await self._store.insert_inbox([body for body, _ in group], self._clock.now())
            except Exception as exc:  # the callers answer 503; Meta will redeliver
                log.warning("webhook.inbox_write_failed", error=str(exc)[:200], bodies=len(group))
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in group:
                if not future.done():
                    future.set_result(None)
            if self._on_commit is not None:
                self._on_commit()


def _text_body(raw: bytes) -> str:
    # Stored as text. A signed body that is not UTF-8 is kept (as replacement characters)
    # for the operator to see; NUL, which PostgreSQL text cannot hold, can only occur in
    # a body that is not valid JSON anyway.
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


async def _read_limited(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise HTTPException(400, detail="Content-Length is not a number")
        if int(length) > limit:
            raise HTTPException(413, detail=f"body over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, detail=f"body over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def build_webhook_router(settings: Settings, get_writer: Callable[[], InboxWriter]) -> APIRouter:
    """GET and POST /webhook for Meta's WhatsApp Cloud API."""
    router = APIRouter(tags=["webhook"])
    secret = settings.whatsapp_app_secret.get_secret_value()
    verify_token = settings.whatsapp_verify_token.get_secret_value()
    limit = settings.webhook_max_body_bytes
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}

    @router.get(
        "/webhook",
        response_class=PlainTextResponse,
        responses={
            200: {"description": "the challenge, echoed", "content": {"text/plain": {}}},
            403: {"description": "wrong mode or verify token", **error},
        },
        summary="Meta's subscription check",
    )
    async def verify(
        mode: Annotated[str | None, Query(alias="hub.mode")] = None,
        token: Annotated[str | None, Query(alias="hub.verify_token")] = None,
        challenge: Annotated[str | None, Query(alias="hub.challenge", max_length=1024)] = None,
    ) -> PlainTextResponse:
        ok = (
            mode == "subscribe"
            and bool(verify_token)
            and token is not None
            and hmac.compare_digest(token.encode(), verify_token.encode())
            and challenge is not None
        )
        if not ok:
            raise HTTPException(403, detail="webhook verification failed")
        assert challenge is not None
        return PlainTextResponse(challenge)

    @router.post(
        "/webhook",
        responses={
            200: {
                "description": "stored durably (processed in the background)",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"status": {"type": "string"}},
                            "required": ["status"],
                        }
                    }
                },
            },
            400: {"description": "unreadable Content-Length", **error},
            401: {"description": "missing or wrong X-Hub-Signature-256", **error},
            413: {"description": "body over webhook_max_body_bytes", **error},
            503: {
                "description": "could not store the body, or too many waiting; Meta "
                "retries (Retry-After)",
                **error,
            },
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        summary="Status and inbound-message notifications from Meta",
    )
    async def receive(
        request: Request,
        signature: Annotated[
            str | None, Header(alias=SIGNATURE_HEADER, description="sha256=<hex HMAC>")
        ] = None,
    ) -> Any:
        raw = await _read_limited(request, limit)
        if not verify_signature(raw, signature, secret):
            raise HTTPException(401, detail=f"missing or wrong {SIGNATURE_HEADER}")
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        try:
            await get_writer().write(_text_body(raw))
        except InboxFull:
            log.warning("webhook.queue_full", hint="the database is not keeping up")
            raise HTTPException(
                503, detail="too many webhooks waiting; retry", headers=retry
            ) from None
        except (DriplineError, RuntimeError, OSError) as exc:
            log.warning("webhook.store_failed", error=type(exc).__name__)
            raise HTTPException(
                503, detail="could not store the webhook; retry", headers=retry
            ) from None
        return JSONResponse({"status": "stored"})

    return router
