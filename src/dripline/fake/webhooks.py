"""The fake's webhook side: statuses, users' messages and value-level errors, in batches.

The request path only pushes onto a heap (no await, no I/O); one background task pops
what is due every `webhook_flush_s`, groups it per phone number id and kind, and POSTs
each batch in its own task, so a slow or dead webhook receiver never slows the API.
Failed POSTs are retried with exponential backoff, as Meta does (it retries for days;
the fake gives up after `webhook_max_attempts`). What each item contains is decided by
the pure `rules` and `payloads` modules.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from dripline.fake.payloads import Inbound, inbound_contacts, inbound_message, status_item
from dripline.fake.rules import (
    ApiError,
    StatusTimings,
    conversation_for,
    pricing_for,
    status_sequence,
    value_error,
)
from dripline.fake.state import AcceptedMessage, FakeState
from dripline.whatsapp.webhooks import SIGNATURE_HEADER, sign

__all__ = ["WebhookSender", "reply_for"]

_log = structlog.get_logger(__name__)
_encode = json.JSONEncoder(separators=(",", ":")).encode
_MAX_IN_FLIGHT = 32


@dataclass(order=True, slots=True)
class _Update:
    due: float
    seq: int
    kind: str = field(compare=False)  # "statuses", "messages" or "errors"
    phone_number_id: str = field(compare=False)
    payload: dict[str, Any] = field(compare=False)
    attempt: int = field(default=0, compare=False)
    # A user's message opens their window with this number when it is due (they wrote).
    opens_window_for: str | None = field(default=None, compare=False)


def reply_for(user: str, reply_fraction: float, stop_fraction: float, text: str) -> str | None:
    """What `user` answers to every message, decided by a stable hash of the number:
    "STOP" for the first `stop_fraction` of users, `text` for the next `reply_fraction`,
    nothing for the rest."""
    if reply_fraction <= 0 and stop_fraction <= 0:
        return None
    u = zlib.crc32(user.encode()) / 2**32
    if u < stop_fraction:
        return "STOP"
    if u < stop_fraction + reply_fraction:
        return text
    return None


class WebhookSender:
    """Schedules and delivers the fake's webhooks to `config.webhook_url`."""

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self._heap: list[_Update] = []
        self._seq = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(_MAX_IN_FLIGHT)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._heap) + len(self._in_flight)

    def clear(self) -> None:
        self._heap.clear()

    def _push(self, update: _Update) -> None:
        heapq.heappush(self._heap, update)

    def _new(
        self,
        due: float,
        kind: str,
        phone_number_id: str,
        payload: dict[str, Any],
        opens_window_for: str | None = None,
    ) -> None:
        cfg = self.state.config
        rng = self.state.rng
        if kind == "messages" and isinstance(payload.get("id"), str):
            # A message the user sent this number: it may be marked read (read_receipts).
            self.state.received[payload["id"]] = (phone_number_id, str(payload.get("from")))
        if cfg.out_of_order_fraction and rng.random() < cfg.out_of_order_fraction:
            due += cfg.out_of_order_delay_s
        self._seq += 1
        self._push(_Update(due, self._seq, kind, phone_number_id, payload, 0, opens_window_for))
        if cfg.duplicate_fraction and rng.random() < cfg.duplicate_fraction:
            self._seq += 1
            again = due + rng.uniform(0.05, 1.0)
            self._push(_Update(again, self._seq, kind, phone_number_id, payload))

    def schedule_statuses(
        self, msg: AcceptedMessage, failure: ApiError | None = None, api_version: int = 99
    ) -> None:
        """Queue the message's statuses (`rules.status_sequence`), then maybe a reply."""
        cfg = self.state.config
        if not cfg.webhook_url:
            return
        rng = self.state.rng
        now = msg.received_monotonic
        wall = msg.received_wall
        timings = StatusTimings(cfg.sent_delay_s, cfg.delivered_delay_s, cfg.read_delay_s)
        category = "utility"
        if msg.type == "template" and cfg.templates is not None and msg.language is not None:
            spec = cfg.templates.get(msg.body, msg.language)
            category = spec.category if spec is not None else category
        for event in status_sequence(failure, timings, cfg.read_fraction, rng):
            pricing = (
                pricing_for(event.status, msg.type, category, msg.in_window)
                if event.error is None
                else None
            )
            conversation = conversation_for(pricing, event.status, msg.wamid, wall, api_version)
            body = status_item(
                wamid=msg.wamid,
                status=event.status,
                timestamp=int(wall + event.delay_s),
                recipient_id=msg.wa_id or msg.to,
                callback_data=msg.callback_data,
                error=event.error,
                pricing=pricing,
                conversation=conversation,
                callback_data_on_failed=cfg.callback_data_on_failed,
            )
            self._new(now + event.delay_s, "statuses", msg.phone_number_id, body)
        if cfg.value_error_fraction and rng.random() < cfg.value_error_fraction:
            self.schedule_value_error(msg.phone_number_id, cfg.value_error_code, now=now)
        if failure is not None:
            return  # an undelivered message gets no answer
        text = reply_for(msg.wa_id or msg.to, cfg.reply_fraction, cfg.stop_fraction, cfg.reply_text)
        if text is not None:
            quoted = rng.random() < cfg.reply_context_fraction
            reply = Inbound("text", text, reply_to=msg.wamid if quoted else None)
            self.schedule_inbound(
                msg.phone_number_id, msg.wa_id or msg.to, reply, cfg.reply_delay_s, now
            )

    def schedule_inbound(
        self,
        phone_number_id: str,
        user: str,
        message: str | Inbound,
        delay_s: float = 0.0,
        now: float | None = None,
        stamp: int | None = None,
    ) -> None:
        """Queue a message from `user` (a WhatsApp ID) to `phone_number_id`; it opens
        their window with that number when they write it, `delay_s` from `now`.
        `stamp` (Unix seconds) is its `timestamp` when given, else when it is written."""
        start = time.monotonic() if now is None else now
        inbound = message if isinstance(message, Inbound) else Inbound("text", message)
        if delay_s <= 0:
            # They write now: the window opens before this call returns.
            self.state.open_window(phone_number_id, user, start)
        if not self.state.config.webhook_url and delay_s <= 0:
            return  # nobody to tell
        wall = time.time() + (start - time.monotonic()) + delay_s
        item = inbound_message(
            inbound,
            wa_id=user,
            message_id=f"wamid.IN{self.state.next_id()}",
            timestamp=int(wall) if stamp is None else stamp,
            business_number=self.state.config.display_phone_number,
        )
        opens = user if delay_s > 0 else None
        self._new(start + delay_s, "messages", phone_number_id, item, opens_window_for=opens)

    def schedule_value_error(
        self,
        phone_number_id: str,
        code: int = 130429,
        details: str | None = None,
        now: float | None = None,
    ) -> None:
        """Queue a value-level error (`value.errors`) for this number."""
        if not self.state.config.webhook_url:
            return
        start = time.monotonic() if now is None else now
        self._new(start, "errors", phone_number_id, value_error(code, details))

    def _body(self, phone_number_id: str, kind: str, items: list[dict[str, Any]]) -> bytes:
        cfg = self.state.config
        value: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": cfg.display_phone_number,
                "phone_number_id": phone_number_id,
            },
        }
        if kind == "messages":
            contacts = inbound_contacts(items)
            if contacts:
                value["contacts"] = contacts
        value[kind] = items
        doc = {
            "object": "whatsapp_business_account",
            "entry": [{"id": cfg.waba_id, "changes": [{"value": value, "field": "messages"}]}],
        }
        return _encode(doc).encode()

    async def run(self) -> None:
        """Pop due updates forever; cancel to stop."""
        while True:
            await asyncio.sleep(self.state.config.webhook_flush_s)
            self.flush(time.monotonic())

    def flush(self, now: float) -> None:
        """Start POSTs for everything due at `now`."""
        cfg = self.state.config
        if not self._heap or self._heap[0].due > now:
            return
        groups: dict[tuple[str, str], list[_Update]] = {}
        while self._heap and self._heap[0].due <= now:
            update = heapq.heappop(self._heap)
            if update.opens_window_for is not None:
                # The user writes now (their message's due time), whether or not the
                # webhook reaches us: the window is Meta's, not the receiver's.
                self.state.open_window(update.phone_number_id, update.opens_window_for, update.due)
                update.opens_window_for = None
            groups.setdefault((update.phone_number_id, update.kind), []).append(update)
        if not cfg.webhook_url:
            return
        size = max(cfg.webhook_batch_max, 1)
        for (number, kind), updates in groups.items():
            for i in range(0, len(updates), size):
                batch = updates[i : i + size]
                task = asyncio.create_task(self._post(number, kind, batch), name="fake-webhook")
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _post(self, phone_number_id: str, kind: str, batch: list[_Update]) -> None:
        cfg = self.state.config
        stats = self.state.stats
        url = cfg.webhook_url
        if not url:
            return
        body = self._body(phone_number_id, kind, [u.payload for u in batch])
        headers = {"Content-Type": "application/json"}
        if cfg.app_secret:
            headers[SIGNATURE_HEADER] = sign(body, cfg.app_secret)
        ok = False
        async with self._limit:
            try:
                session = self._session
                if session is None or session.closed:
                    session = self._session = aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=cfg.webhook_timeout_s)
                    )
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    ok = 200 <= resp.status < 300
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                _log.debug("fake.webhook_failed", error=type(exc).__name__)
        if ok:
            stats.webhook_posts += 1
            stats.webhook_updates += len(batch)
            for _ in batch:
                if kind == "statuses":
                    stats.webhook_statuses += 1
                elif kind == "errors":
                    stats.webhook_value_errors += 1
                else:
                    stats.webhook_inbound += 1
            return
        stats.webhook_failures += 1
        retry_at = time.monotonic() + min(0.5 * 2 ** batch[0].attempt, 30.0)
        for update in batch:
            if update.attempt + 1 < cfg.webhook_max_attempts:
                update.attempt += 1
                update.due = retry_at
                self._push(update)

    async def close(self) -> None:
        """Stop posting: cancel in-flight POSTs and close the HTTP session."""
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
