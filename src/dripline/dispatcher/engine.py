"""The dispatcher: claim due conversations, send at the API's speed, record outcomes.

Four cooperating tasks share one in-memory queue of leased conversations:

    claimer   claims the next batch before the queue runs dry (pipelined), sleeps
              until the earliest due time when nothing is due, wakes on enrollment
    launcher  takes rate tokens and concurrency slots, reserves the messages rows
              (`sending`, one round trip for a group) and starts the HTTP calls
    senders   one task per HTTP call; no database connection is held meanwhile
    recorder  writes outcomes in batches (one transaction per flush)

plus a heartbeat (workers split the global rate) and a controller (throttle recovery,
adaptive concurrency, the seed's tiers). All database work goes through the Store; the
pure decisions live in `reactions`, `policies`, `backoff` and `ratelimit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from dripline.clock import Clock, SystemClock
from dripline.dispatcher.backoff import throttle_backoff_s
from dripline.dispatcher.policies import (
    AimdState,
    aimd_step,
    claim_size,
    initial_limits,
    tier_limits,
)
from dripline.dispatcher.ratelimit import KeyedRateLimiter, RateController, RecipientPacer
from dripline.dispatcher.reactions import Action, Failure, Reaction, react
from dripline.dispatcher.stats import DispatchObserver, DispatchStats, FanOut
from dripline.errors import (
    DatabaseUnavailable,
    DriplineError,
    StoreError,
    TransientStoreError,
    TransportError,
)
from dripline.errors import WhatsAppError as ApiError
from dripline.flows.base import FlowRegistry, OutboundMessage, Transition
from dripline.settings import Delivery, Policy, Settings
from dripline.store import LEASE_LOST
from dripline.store.base import (
    ClaimedConversation,
    ConversationUpdate,
    MessageUpdate,
    Outcome,
    Reservation,
    ReservationResult,
    Store,
    WorkerInfo,
)
from dripline.store.schema import ACTIVE_STATES
from dripline.whatsapp.errors import classify

__all__ = ["Dispatcher", "RunSummary", "Sender"]

log = structlog.get_logger("dripline.dispatcher")

# How far ahead (seconds of sending at the rate limit) the claimer keeps the queue filled.
CLAIM_HORIZON_S = 1.0
# The launcher reserves a group of sends (one transaction) when the first one's rate
# token is RESERVE_LEAD_S away, taking every send whose token falls due within
# GROUP_SPAN_S after it. A reservation's fixed cost (~2 ms of CPU) is then shared by
# 50 sends at 1,000/s; a crash leaves at most that many reserved-but-unsent rows, which
# recover as `unknown` sends do.
RESERVE_LEAD_S = 0.01
GROUP_SPAN_S = 0.05
MAX_GROUP = 256
RECORD_INTERVAL_S = 0.05
CONTROLLER_INTERVAL_S = 0.5
PROGRESS_LOG_S = 10.0
STOP_GRACE_S = 5.0  # how long tasks get to notice a stop before they are cancelled
DB_RETRY_CAP_S = 10.0
# Transient failures with no success between them, for at least this many sends and
# this long, mean the API is down, not that the messages are bad: the sender pauses
# and probes, and the failures stop counting against max_attempts. The time condition
# matters: errors come back faster than successes, so a burst's first answers can all
# be failures while the API is fine.
OUTAGE_STREAK = 10
OUTAGE_MIN_S = 0.5
OUTAGE_PAUSE_CAP_S = 5.0


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


@dataclass
class RunSummary:
    """How a run ended, for the CLI and the demo."""

    worker_id: str
    stats: DispatchStats
    started_at: datetime
    ended_at: datetime
    breaker_tripped: bool = False
    breaker_reason: str | None = None

    @property
    def exit_code(self) -> int:
        return 3 if self.breaker_tripped else 0


@dataclass(slots=True)
class _Send:
    conv: ClaimedConversation
    purpose: str
    message: OutboundMessage
    sender_key: str
    start_at: float
    message_id: int = 0
    prior_attempts: int = 0


@dataclass
class _State:
    """Mutable per-run bookkeeping, kept apart from configuration."""

    queue: deque[ClaimedConversation] = field(default_factory=deque)
    outcomes: list[Outcome] = field(default_factory=list)
    held: dict[int, ClaimedConversation] = field(default_factory=dict)  # leased, not written
    in_flight: int = 0
    launching: int = 0  # taken from the queue, not yet in flight
    throttle_streak: int = 0  # throttle events (not responses) since the last success
    throttle_pause_until: float = 0.0
    transient_streak: int = 0
    streak_started: float = 0.0
    outage_level: int = 0
    outage_until: float = 0.0
    pair_hits: dict[str, int] = field(default_factory=dict)
    breaker_open: bool = False
    breaker_reason: str | None = None
    breaker_tripped: bool = False
    cron_tick_done: bool = False


def _worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Dispatcher:
    """Sends every due question on time, at the configured rate, at most once."""

    def __init__(
        self,
        *,
        store: Store,
        client: Sender,
        flows: FlowRegistry,
        settings: Settings,
        clock: Clock | None = None,
        observer: DispatchObserver | None = None,
        worker_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.flows = flows
        self.settings = settings
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or _worker_id()
        self.stats = DispatchStats()
        self.observer: DispatchObserver = FanOut(self.stats, observer) if observer else self.stats
        self._rng = rng or random.Random()
        self._policy = settings.policy
        limits = initial_limits(self._policy, settings.batch_limit, settings.concurrency)
        self.batch_limit = limits.batch_limit
        self.concurrency = limits.concurrency
        self._aimd = AimdState(
            limit=float(limits.concurrency), floor=1, ceiling=settings.max_concurrency
        )
        # The seed's design has no rate limiter at all; the baseline must not get one.
        rate = 1e9 if self._policy is Policy.SEED_CRON else settings.rate_per_s
        self._rate_share = rate
        self._limiters = KeyedRateLimiter(rate)
        self._controllers: dict[str, RateController] = {}
        self._pacer = RecipientPacer(settings.pair_interval_s)
        self._default_sender = settings.whatsapp_phone_number_id
        self._s = _State()
        self._stop = asyncio.Event()
        self._queue_event = asyncio.Event()  # queue gained items
        self._room_event = asyncio.Event()  # queue fell below the low-water mark
        self._slot_event = asyncio.Event()  # a concurrency slot freed
        self._record_event = asyncio.Event()  # outcomes waiting to be written
        self._breaker_closed = asyncio.Event()
        self._breaker_closed.set()
        self._resched_event = asyncio.Event()  # our own write made a row due sooner
        self._wake_at: datetime | None = None  # when the idle claimer means to look again
        self._tasks: set[asyncio.Task[Any]] = set()
        self._latency_baseline: float | None = None
        self._recent_latency: list[float] = []
        self._throttled_since_tick = False
        self._started = self.clock.now()
        self._saved_concurrency = 0

    # ------------------------------------------------------------------ public
    def request_stop(self) -> None:
        """Begin a graceful shutdown: stop claiming, finish in-flight sends."""
        self._stop.set()
        self._queue_event.set()
        self._room_event.set()
        self._slot_event.set()
        self._record_event.set()
        self._breaker_closed.set()  # waiters re-check the stop event and return

    async def run(self, *, once: bool = False, max_seconds: float | None = None) -> RunSummary:
        """Dispatch until stopped (or, with `once`, until nothing is due or the budget ends).

        Graceful shutdown on `request_stop()`: unsent claims are released, in-flight
        sends get `shutdown_deadline_s`, every outcome is written before returning.
        """
        self._started = self.clock.now()
        # A dispatcher may run again (e.g. `once` from a scheduler loop): start clean.
        self._s = _State()
        for event in (self._stop, self._queue_event, self._room_event, self._resched_event):
            event.clear()
        self._breaker_closed.set()
        await self._retry_db(self._heartbeat_once, "register worker")
        self._emit_limits()
        workers = [
            self._spawn(self._claimer(once), "claimer"),
            self._spawn(self._launcher(), "launcher"),
        ]
        side = [
            self._spawn(self._recorder(), "recorder"),
            self._spawn(self._heartbeat(), "heartbeat"),
            self._spawn(self._controller(), "controller"),
        ]
        loop = asyncio.get_running_loop()
        budget = None if max_seconds is None else loop.time() + max_seconds
        stop_wait = asyncio.ensure_future(self._stop.wait())
        claimer = workers[0]
        try:
            pending: set[asyncio.Future[Any]] = {stop_wait, *workers, *side}
            while not self._stop.is_set() and not claimer.done():
                timeout = None if budget is None else budget - loop.time()
                if timeout is not None and timeout <= 0:
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    exc = None if task is stop_wait else task.exception()
                    if exc is not None:
                        raise exc
        finally:
            self.request_stop()
            stop_wait.cancel()
            await asyncio.shield(self._shutdown(workers, side))
        return RunSummary(
            worker_id=self.worker_id,
            stats=self.stats,
            started_at=self._started,
            ended_at=self.clock.now(),
            breaker_tripped=self._s.breaker_tripped,
            breaker_reason=self._s.breaker_reason,
        )

    # ------------------------------------------------------------- task plumbing
    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"dripline-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _sleep(self, seconds: float, *events: asyncio.Event) -> None:
        """Sleep, waking early on stop or any of `events`."""
        if seconds <= 0:
            return
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._stop, *events)]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _retry_db(self, op: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Run a store call, retrying with backoff while the database is unreachable."""
        attempt = 0
        while True:
            try:
                return await op()
            except (TransientStoreError, OSError) as exc:
                delay = min(DB_RETRY_CAP_S, 0.2 * 2**attempt) * self._rng.uniform(0.5, 1.0)
                attempt += 1
                log.warning(
                    "database unavailable, retrying",
                    what=what,
                    error=str(exc),
                    retry_in_s=round(delay, 2),
                    attempt=attempt,
                )
                if self._stop.is_set() and attempt > 5:
                    raise
                await asyncio.sleep(delay)

    # ------------------------------------------------------------------ claimer
    def _busy(self) -> bool:
        return bool(self._s.queue) or self._s.in_flight > 0 or self._s.launching > 0

    def _low_water(self) -> int:
        return max(1, min(self.batch_limit, int(self._rate_share * CLAIM_HORIZON_S)) // 2)

    async def _claimer(self, once: bool) -> None:
        settings = self.settings
        cron = self._policy is Policy.SEED_CRON
        interval = settings.interval_s if cron else 0.0
        next_tick = asyncio.get_running_loop().time()
        wakeup = self.store.wakeup_event()
        last_tier_check = -1e9
        while not self._stop.is_set():
            await self._breaker_closed.wait()
            if self._stop.is_set():
                break
            loop_now = asyncio.get_running_loop().time()
            if cron:
                # The seed's cron: one fetch per tick, skipped while the last run is busy.
                if loop_now < next_tick or self._busy():
                    if once and self._s.cron_tick_done and not self._busy():
                        return
                    await self._sleep(min(0.05, max(0.0, next_tick - loop_now)) or 0.05)
                    continue
                next_tick = loop_now + interval
                want = self.batch_limit
            else:
                if self._policy is Policy.TIERS and loop_now - last_tier_check >= 1.0:
                    last_tier_check = loop_now
                    await self._apply_tiers()
                queued = len(self._s.queue)
                if queued >= self._low_water():
                    self._room_event.clear()
                    await self._sleep(1.0, self._room_event)
                    continue
                want = claim_size(self.batch_limit, self._rate_share, CLAIM_HORIZON_S, queued)
                want = max(want, 1)
            started = time.perf_counter()
            now = self.clock.now()
            rows: list[ClaimedConversation] = await self._retry_db(
                functools.partial(
                    self.store.claim_due, want, settings.lease_ttl_s, self.worker_id, now
                ),
                "claim",
            )
            self.observer.on_claim(len(rows), time.perf_counter() - started)
            if rows:
                log.debug(
                    "claimed",
                    claimed=len(rows),
                    queued=len(self._s.queue),
                    in_flight=self._s.in_flight,
                )
                for row in rows:
                    self._s.held[row.id] = row
                self._s.queue.extend(rows)
                self._queue_event.set()
            if cron:
                self._s.cron_tick_done = True
                continue
            if len(rows) >= want:
                continue  # more may be due right now
            if once:
                if not rows and not self._busy():
                    if not self._s.outcomes:
                        return
                    # Outcomes may reschedule work (a throttle retry) that is due soon.
                    await self._sleep(RECORD_INTERVAL_S * 2)
                    continue
                await self._sleep(RECORD_INTERVAL_S)
                continue
            await self._sleep_until_due(wakeup)

    async def _sleep_until_due(self, wakeup: asyncio.Event) -> None:
        """Nothing more is due: sleep until the earliest next_send_at (capped), or until
        an enrollment or one of our own reschedules makes something due sooner."""
        now = self.clock.now()
        self._resched_event.clear()
        next_due = await self._retry_db(lambda: self.store.next_due_at(now), "next due")
        ceiling = self.settings.poll_ceiling_s
        delay = ceiling if next_due is None else (next_due - self.clock.now()).total_seconds()
        delay = min(ceiling, delay)
        if delay <= 0:
            # Due rows exist but are leased elsewhere: brief pause.
            delay = 0.01
        self._wake_at = self.clock.now() + timedelta(seconds=delay)
        wakeup.clear()
        await self._sleep(delay, wakeup, self._resched_event)
        self._wake_at = None

    async def _apply_tiers(self) -> None:
        now = self.clock.now()
        counts = await self._retry_db(lambda: self.store.backlog(now), "backlog")
        limits = tier_limits(counts.due_now, self.settings.tier_thresholds)
        if (limits.batch_limit, limits.concurrency) != (self.batch_limit, self.concurrency):
            log.info(
                "tier change",
                due=counts.due_now,
                batch_limit=limits.batch_limit,
                concurrency=limits.concurrency,
            )
            self.batch_limit, self.concurrency = limits.batch_limit, limits.concurrency
            self._emit_limits()
            self._slot_event.set()

    # ----------------------------------------------------------------- launcher
    def _sender_key(self, conv: ClaimedConversation) -> str:
        return conv.sender or self._default_sender

    def _controller_for(self, key: str) -> RateController:
        ctl = self._controllers.get(key)
        if ctl is None:
            ctl = self._controllers[key] = RateController(
                ceiling=self._rate_share, current=self._rate_share
            )
        return ctl

    async def _launcher(self) -> None:
        while True:
            if not self._s.queue:
                if self._stop.is_set():
                    return
                self._queue_event.clear()
                await self._queue_event.wait()
                continue
            if self._stop.is_set():
                return
            if self._s.breaker_open:
                await self._breaker_closed.wait()
                continue
            group = await self._take_group()
            if group:
                self._s.launching = len(group)
                try:
                    await self._reserve_and_start(group)
                finally:
                    self._s.launching = 0

    async def _take_group(self) -> list[_Send]:
        """Pop the sends that may start within GROUP_SPAN_S of the first, a slot each."""
        group: list[_Send] = []
        loop = asyncio.get_running_loop()
        horizon = RESERVE_LEAD_S
        while self._s.queue and len(group) < MAX_GROUP and not self._stop.is_set():
            if self._s.in_flight + len(group) >= self.concurrency:
                if group:
                    break
                self._slot_event.clear()
                await self._sleep(1.0, self._slot_event)
                continue
            conv = self._s.queue[0]
            key = self._sender_key(conv)
            limiter = self._limiters.get(key)
            now_m = loop.time()
            wait = limiter.peek(now_m)
            if wait > horizon:
                if group:
                    break
                # Wait for the token outside any slot, then look again.
                await self._sleep(wait - RESERVE_LEAD_S)
                continue
            if not group:
                horizon = wait + GROUP_SPAN_S
            self._s.queue.popleft()
            if len(self._s.queue) < self._low_water():
                self._room_event.set()
            send = self._prepare(conv, now_m)
            if send is None:
                continue
            ready = self._pacer.ready_at(conv.phone, now_m)
            if ready > now_m + horizon:
                self._defer(conv, ready - now_m, "pair pacing: recipient was sent to recently")
                continue
            delay = limiter.reserve(now_m)
            send.start_at = now_m + delay
            self._pacer.mark(conv.phone, send.start_at)
            group.append(send)
        return group

    def _prepare(self, conv: ClaimedConversation, now_m: float) -> _Send | None:
        """Resolve what to send; conversations needing no send are recorded directly."""
        now = self.clock.now()
        try:
            flow = self.flows.get(conv.flow)
            quiet = flow.quiet_until(conv, now)
            if quiet is not None and quiet > now:
                self._finish(conv, self._update(conv, next_send_at=quiet))
                return None
            if conv.purpose == "timeout":
                t = flow.on_timeout(conv, now)
                self._finish(conv, self._transition_update(conv, t, attempts=0))
                return None
            message = flow.message(conv, conv.purpose)
        except DriplineError as exc:
            self._fail_conversation(conv, f"flow error: {exc}")
            return None
        return _Send(conv, conv.purpose, message, self._sender_key(conv), now_m)

    async def _reserve(
        self, group: list[_Send], now: datetime, *, resend: bool
    ) -> list[ReservationResult]:
        reservations = [
            Reservation(
                conversation_id=s.conv.id,
                step=s.conv.step,
                purpose=s.purpose,
                due_at=s.conv.next_send_at,
                sender=s.conv.sender,
                resend_unknown=resend,
            )
            for s in group
        ]
        results: list[ReservationResult] = await self._retry_db(
            lambda: self.store.reserve(reservations, self.worker_id, now), "reserve"
        )
        return results

    async def _reserve_and_start(self, group: list[_Send]) -> None:
        now = self.clock.now()
        group.sort(key=lambda g: g.conv.id)  # lock order, see _flush
        at_least_once = self.settings.delivery is Delivery.AT_LEAST_ONCE
        results = await self._reserve(group, now, resend=at_least_once)
        held = [(s, r) for s, r in zip(group, results, strict=True) if not r.ok]
        proven = await self._never_accepted(held, now) if held else []
        if proven:
            again = await self._reserve(proven, now, resend=True)
            retried = {s.conv.id: r for s, r in zip(proven, again, strict=True)}
            results = [retried.get(s.conv.id, r) for s, r in zip(group, results, strict=True)]
        for send, res in zip(group, results, strict=True):
            if res.ok:
                send.message_id = res.message_id
                send.prior_attempts = res.attempts - 1
                self._s.in_flight += 1
                self._spawn(self._send(send), "send")
            else:
                self._resolve_prior(send, res)
        self.observer.on_in_flight(self._s.in_flight)

    async def _never_accepted(
        self, held: list[tuple[_Send, ReservationResult]], now: datetime
    ) -> list[_Send]:
        """Unknown sends that status webhooks prove the API never accepted.

        The Cloud API sends a status webhook for every message it accepts, within
        seconds. When deliveries kept arriving for `unknown_after_s` after a send went
        unknown and none of them mentioned it (its row is still `unknown`), resending
        it cannot make a duplicate. Without webhooks there is no such proof, and the
        send is never repeated in at-most-once mode.
        """
        window = timedelta(seconds=self.settings.unknown_after_s)
        candidates = [
            (s, r)
            for s, r in held
            if r.prior_status == "unknown"
            and r.status_at is not None
            and now - r.status_at >= window
        ]
        if not candidates:
            return []
        last = await self._retry_db(self.store.last_webhook_at, "last webhook")
        if last is None:
            return []
        proven = [
            s for s, r in candidates if r.status_at is not None and last - r.status_at >= window
        ]
        if proven:
            log.info("resending sends that webhooks show were never accepted", count=len(proven))
        return proven

    def _resolve_prior(self, send: _Send, res: ReservationResult) -> None:
        """The message row exists from an earlier attempt: decide without sending."""
        conv = send.conv
        status = res.prior_status
        if status == LEASE_LOST:
            # Another worker re-claimed it after our lease lapsed: it is theirs now.
            self._s.held.pop(conv.id, None)
            return
        flow = self.flows.get(conv.flow)
        if status in ("sent", "delivered", "read"):
            sent_at = res.status_at or self.clock.now()
            t = flow.after_send(conv, send.purpose, sent_at)
            self._finish(conv, self._transition_update(conv, t, attempts=0))
            return
        if status in ("sending", "unknown"):
            # A send whose outcome was lost. Wait for a status webhook to settle it; after
            # `max_attempts` windows with no word, give up rather than risk a duplicate.
            if conv.attempts + 1 >= self.settings.max_attempts:
                self._fail_conversation(
                    conv,
                    f"outcome of step {conv.step + 1} unknown (no status webhook after "
                    f"{conv.attempts + 1} checks); not resent to avoid a duplicate",
                )
                return
            self.observer.on_failure("transient", None, "unknown")
            self._finish(
                conv,
                self._update(
                    conv,
                    next_send_at=self.clock.now()
                    + timedelta(seconds=self.settings.unknown_after_s),
                    attempts=conv.attempts + 1,
                    last_error="send outcome unknown; waiting for a status webhook",
                ),
            )
            return
        # `failed` from a status webhook before our own result was written. A window
        # error still gets its template fallback; anything else ends the conversation
        # with the reason, since the row cannot be resent under the same key.
        cls = str(classify(res.error_code, None))
        failure = Failure(cls, res.error_code, "reported failed by a status webhook")
        if cls == "window":
            self._apply_failure(send, failure, message_id=None)
        else:
            code = f"{res.error_code}: " if res.error_code is not None else ""
            self._fail_conversation(conv, f"{code}delivery failed after the API accepted it")

    # ------------------------------------------------------------------ senders
    async def _send(self, send: _Send) -> None:
        loop = asyncio.get_running_loop()
        conv = send.conv
        try:
            delay = send.start_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            started = loop.time()
            sent_at = self.clock.now()
            lag_s = (sent_at - (conv.next_send_at or sent_at)).total_seconds()
            try:
                result = await self.client.send(
                    conv.phone,
                    send.message,
                    sender=conv.sender,
                    callback_data=str(send.message_id),
                )
            except TransportError as exc:
                failure = Failure("transient", None, str(exc), maybe_sent=exc.maybe_sent)
                self._apply_failure(send, failure, message_id=send.message_id)
                return
            except ApiError as exc:
                failure = Failure(
                    exc.error_class, exc.code, str(exc), retry_after_s=exc.retry_after_s
                )
                self._apply_failure(send, failure, message_id=send.message_id)
                return
            latency = loop.time() - started
            self._on_success(send, result.wamid, sent_at, latency, lag_s)
        except asyncio.CancelledError:
            # Shutdown deadline passed mid-call: the row stays `sending` and becomes
            # `unknown` when the conversation is next claimed.
            raise
        except Exception as exc:  # a bug in a flow or the client must not kill the worker
            log.exception("unexpected send error", conversation_id=conv.id)
            failure = Failure("transient", None, f"unexpected error: {exc!r}", maybe_sent=True)
            self._apply_failure(send, failure, message_id=send.message_id)
        finally:
            self._s.in_flight -= 1
            self._slot_event.set()
            self.observer.on_in_flight(self._s.in_flight)

    def _on_success(
        self, send: _Send, wamid: str, sent_at: datetime, latency_s: float, lag_s: float
    ) -> None:
        conv = send.conv
        self._s.throttle_streak = 0
        if self._s.outage_level:
            log.info("API answering again after an outage", failures=self._s.transient_streak)
        self._s.transient_streak = 0
        self._s.outage_level = 0
        self._s.pair_hits.pop(conv.phone, None)
        self._controller_for(send.sender_key).record_accept()
        self._recent_latency.append(latency_s)
        self.observer.on_sent(latency_s, lag_s)
        flow = self.flows.get(conv.flow)
        t = flow.after_send(conv, send.purpose, sent_at)
        self._finish(
            conv,
            self._transition_update(conv, t, attempts=0),
            MessageUpdate(
                message_id=send.message_id,
                status="sent",
                wamid=wamid,
                sent_at=sent_at,
                latency_ms=latency_s * 1000.0,
            ),
        )
        if self._saved_concurrency:
            self._close_breaker()

    def _apply_failure(self, send: _Send, failure: Failure, *, message_id: int | None) -> None:
        conv = send.conv
        flow = self.flows.get(conv.flow)
        reaction = react(
            failure,
            attempts=conv.attempts,
            max_attempts=self.settings.max_attempts,
            delivery=self.settings.delivery,
            purpose=send.purpose,
            has_fallback=flow.has_fallback(conv),
            retry_base_s=self.settings.retry_base_s,
            retry_cap_s=self.settings.retry_cap_s,
            throttle_streak=self._s.throttle_streak,
            pair_hits=self._s.pair_hits.get(conv.phone, 0),
            unknown_after_s=self.settings.unknown_after_s,
            rng=self._rng,
        )
        if failure.error_class == "transient" and reaction.action is not Action.UNKNOWN:
            reaction = self._outage_reaction(send.sender_key, reaction)
        self.observer.on_failure(failure.error_class, failure.code, reaction.action.value)
        msg = (
            MessageUpdate(
                message_id=message_id,
                status=reaction.message_status,
                error_code=failure.code,
                error_title=failure.message[:500],
            )
            if message_id
            else None
        )
        now = self.clock.now()
        if failure.error_class == "pair_throttle":
            self._s.pair_hits[conv.phone] = self._s.pair_hits.get(conv.phone, 0) + 1
        if reaction.slows_sender:
            delay = self._on_throttle(send.sender_key, failure.retry_after_s)
            reaction = dataclasses.replace(reaction, delay_s=delay)
        if reaction.action is Action.TRIP:
            # Leave the conversation exactly as it was: the backlog is not at fault.
            self._finish(conv, self._update(conv, next_send_at=conv.next_send_at), msg)
            self._trip_breaker(
                failure.message if failure.code is None else f"{failure.code}: {failure.message}"
            )
            return
        if reaction.action is Action.FAIL:
            self._finish(
                conv,
                self._update(
                    conv,
                    state="failed",
                    next_send_at=None,
                    attempts=conv.attempts + 1,
                    last_error=reaction.reason,
                ),
                msg,
            )
            return
        if reaction.action is Action.FALLBACK:
            self._finish(
                conv,
                self._update(
                    conv, purpose="fallback", next_send_at=now, last_error=reaction.reason
                ),
                msg,
            )
            return
        attempts = conv.attempts + 1 if reaction.counts_attempt else conv.attempts
        self._finish(
            conv,
            self._update(
                conv,
                next_send_at=now + timedelta(seconds=reaction.delay_s),
                attempts=attempts,
                last_error=reaction.reason,
            ),
            msg,
        )

    def _outage_reaction(self, key: str, reaction: Reaction) -> Reaction:
        """Count a transient failure; during a suspected outage, hold the sender and
        retry without charging the message an attempt."""
        now = asyncio.get_running_loop().time()
        st = self._s
        if st.transient_streak == 0:
            st.streak_started = now
        st.transient_streak += 1
        if st.transient_streak < OUTAGE_STREAK or now - st.streak_started < OUTAGE_MIN_S:
            return reaction
        if now >= st.outage_until:
            # One step of backoff per probe, not per failure: a burst of in-flight
            # failures is one observation.
            st.outage_level += 1
            pause = min(OUTAGE_PAUSE_CAP_S, 0.5 * 2 ** (st.outage_level - 1))
            st.outage_until = now + pause
            self._limiters.get(key).pause_until(st.outage_until)
            log.warning(
                "API outage suspected: pausing sends",
                failures_in_a_row=st.transient_streak,
                pause_s=pause,
            )
        delay = st.outage_until - now + self._rng.uniform(0, 0.5)
        return Reaction(Action.RETRY, delay, False, "pending", reaction.reason)

    # ------------------------------------------------------- outcomes/recording
    def _update(
        self,
        conv: ClaimedConversation,
        *,
        state: str | None = None,
        purpose: str | None = None,
        next_send_at: datetime | None,
        attempts: int | None = None,
        last_error: str | None = None,
    ) -> ConversationUpdate:
        return ConversationUpdate(
            conversation_id=conv.id,
            state=state or conv.state,
            step=conv.step,
            purpose=purpose or conv.purpose,
            next_send_at=next_send_at,
            attempts=conv.attempts if attempts is None else attempts,
            last_error=last_error,
        )

    def _transition_update(
        self, conv: ClaimedConversation, t: Transition, *, attempts: int
    ) -> ConversationUpdate:
        return ConversationUpdate(
            conversation_id=conv.id,
            state=t.state,
            step=t.step,
            purpose=t.purpose,
            next_send_at=t.next_send_at,
            attempts=attempts,
            last_error=t.note,
        )

    def _defer(self, conv: ClaimedConversation, delay_s: float, why: str) -> None:
        self._finish(
            conv,
            self._update(
                conv, next_send_at=self.clock.now() + timedelta(seconds=delay_s), last_error=why
            ),
        )

    def _fail_conversation(self, conv: ClaimedConversation, reason: str) -> None:
        log.warning("conversation failed", conversation_id=conv.id, reason=reason)
        self.observer.on_failure("permanent", None, "fail")
        self._finish(conv, self._update(conv, state="failed", next_send_at=None, last_error=reason))

    def _finish(
        self,
        conv: ClaimedConversation,
        update: ConversationUpdate,
        msg: MessageUpdate | None = None,
    ) -> None:
        self._s.held.pop(conv.id, None)
        self._s.outcomes.append(Outcome(conversation=update, message=msg))
        if len(self._s.outcomes) >= 256:
            self._record_event.set()

    async def _flush(self) -> None:
        if not self._s.outcomes:
            return
        batch, self._s.outcomes = self._s.outcomes, []
        # Every write takes row locks in id order, so two of our transactions (a record
        # and a heartbeat's lease extension) can never deadlock each other.
        batch.sort(key=lambda o: o.conversation.conversation_id)
        started = time.perf_counter()
        try:
            await self._retry_db(
                lambda: self.store.record_results(batch, self.worker_id, self.clock.now()),
                "record results",
            )
        except BaseException:
            self._s.outcomes[:0] = batch  # nothing recorded is ever dropped
            raise
        self.observer.on_record(len(batch), time.perf_counter() - started)
        self._note_reschedules(batch)

    def _note_reschedules(self, batch: list[Outcome]) -> None:
        """Wake the claimer if a row we just wrote falls due before it meant to look."""
        wake_at = self._wake_at
        if wake_at is None:
            return
        times = [
            o.conversation.next_send_at
            for o in batch
            if o.conversation.next_send_at is not None and o.conversation.state in ACTIVE_STATES
        ]
        if times and min(times) < wake_at:
            soonest = min(times)
            delay = (soonest - self.clock.now()).total_seconds()
            if delay <= 0:
                self._resched_event.set()
            else:
                self._wake_at = soonest
                asyncio.get_running_loop().call_later(delay, self._resched_event.set)

    async def _recorder(self) -> None:
        while not self._stop.is_set():
            self._record_event.clear()
            await self._sleep(RECORD_INTERVAL_S, self._record_event)
            await self._flush()

    # ------------------------------------------------- heartbeat and controller
    async def _heartbeat_once(self) -> None:
        now = self.clock.now()
        info = WorkerInfo(
            id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started,
            heartbeat_at=now,
            rate_per_s=self._rate_share,
            concurrency=self.concurrency,
            policy=self._policy.value,
            stats={
                "sent": self.stats.sent,
                "failed": self.stats.failed,
                "throttled": self.stats.throttled,
                "retries": self.stats.retries,
                "in_flight": self._s.in_flight,
            },
        )
        live = await self.store.heartbeat(info, live_after_s=3 * self.settings.heartbeat_s)
        if self._policy is Policy.SEED_CRON:
            return
        share = self.settings.rate_per_s / max(1, len(live))
        if abs(share - self._rate_share) > 1e-9:
            log.info("rate share", workers=len(live), rate_per_s=round(share, 2))
            self._rate_share = share
            self._limiters.set_rate(share)
            for key, ctl in self._controllers.items():
                self._limiters.get(key).set_rate(ctl.set_ceiling(share))
            self._emit_limits()
        # Keep the leases of rows still waiting in the queue alive.
        waiting = sorted(c.id for c in self._s.queue)
        if waiting:
            await self.store.extend_leases(waiting, self.worker_id, self.settings.lease_ttl_s, now)

    async def _heartbeat(self) -> None:
        while not self._stop.is_set():
            await self._sleep(self.settings.heartbeat_s)
            if self._stop.is_set():
                return
            try:
                await self._heartbeat_once()
            except (DatabaseUnavailable, StoreError, OSError) as exc:
                log.warning("heartbeat failed", error=str(exc))

    def _on_throttle(self, key: str, retry_after_s: float | None) -> float:
        """React to a throughput error; returns how long the message should wait.

        All sends in flight when the API's bucket ran dry come back throttled together:
        that is one event. The first one pauses the sender (Retry-After when given, else
        0.25 s doubling per consecutive event, at most 5 s) and lowers its rate; the
        rest only wait out the same pause.
        """
        loop_now = asyncio.get_running_loop().time()
        st = self._s
        limiter = self._limiters.get(key)
        self._throttled_since_tick = True
        if loop_now >= st.throttle_pause_until:
            st.throttle_streak += 1
            pause = throttle_backoff_s(
                st.throttle_streak - 1, retry_after_s, base_s=0.25, cap_s=5.0, rng=self._rng
            )
            st.throttle_pause_until = loop_now + max(0.1, pause)
            limiter.pause_until(st.throttle_pause_until)
            limiter.set_rate(self._controller_for(key).on_throttle(loop_now))
            if st.throttle_streak in (5, 20, 100):
                log.warning(
                    "sustained throttling",
                    sender=key,
                    throttle_events_in_a_row=st.throttle_streak,
                    rate_per_s=round(limiter.rate_per_s, 1),
                )
            self._emit_limits()
        return st.throttle_pause_until - loop_now + self._rng.uniform(0.0, 0.1)

    async def _controller(self) -> None:
        last_log = asyncio.get_running_loop().time()
        last = (0, 0, 0, 0, 0)
        while not self._stop.is_set():
            await self._sleep(CONTROLLER_INTERVAL_S)
            loop_now = asyncio.get_running_loop().time()
            if loop_now - last_log >= PROGRESS_LOG_S:
                last = self._log_progress(loop_now - last_log, last)
                last_log = loop_now
            for key, ctl in self._controllers.items():
                self._limiters.get(key).set_rate(ctl.tick(loop_now))
            if self._policy is Policy.ADAPTIVE:
                self._adapt_concurrency()
            self._throttled_since_tick = False
            self._emit_limits()

    def _log_progress(
        self, window_s: float, last: tuple[int, int, int, int, int]
    ) -> tuple[int, int, int, int, int]:
        """One line per period: the seed guide's "Messages due" and "Processing took",
        for a continuous dispatcher."""
        st = self.stats
        now = (st.claimed, st.sent, st.failed, st.throttled, st.claims)
        claimed, sent, failed, throttled, claims = (a - b for a, b in zip(now, last, strict=True))
        if claimed or sent or failed or self._s.in_flight:
            lag50, lag99 = st.lag.quantiles(0.5, 0.99)
            log.info(
                "dispatch progress",
                window_s=round(window_s, 1),
                claims=claims,
                claimed=claimed,
                sent=sent,
                failed=failed,
                throttled=throttled,
                per_s=round(sent / window_s, 1),
                queued=len(self._s.queue),
                in_flight=self._s.in_flight,
                concurrency=self.concurrency,
                rate_per_s=round(self._rate_share, 1),
                lag_p50_s=round(lag50, 3),
                lag_p99_s=round(lag99, 3),
            )
        return now

    def _adapt_concurrency(self) -> None:
        samples, self._recent_latency = self._recent_latency, []
        ratio = 1.0
        if samples:
            samples.sort()
            p50 = samples[len(samples) // 2]
            if self._latency_baseline is None:
                self._latency_baseline = p50
            else:
                self._latency_baseline = min(self._latency_baseline * 1.01, p50)
            ratio = p50 / self._latency_baseline if self._latency_baseline else 1.0
        saturated = self._s.in_flight >= 0.9 * self.concurrency
        self._aimd = aimd_step(
            self._aimd,
            throttled=self._throttled_since_tick,
            latency_ratio=ratio,
            saturated=saturated,
            increase=max(1.0, self._aimd.limit * 0.1),
        )
        new = int(self._aimd.limit)
        if new != self.concurrency:
            self.concurrency = new
            self._slot_event.set()

    def _emit_limits(self) -> None:
        rate = sum(lim.rate_per_s for lim in map(self._limiters.get, self._limiters.keys()))
        self.observer.on_limits(self.concurrency, rate or self._rate_share)

    # ---------------------------------------------------------- circuit breaker
    def _trip_breaker(self, reason: str) -> None:
        if self._s.breaker_open:
            return
        self._saved_concurrency = 0 if not self._saved_concurrency else self._saved_concurrency
        self._s.breaker_open = True
        self._s.breaker_tripped = True
        self._s.breaker_reason = reason
        self._breaker_closed.clear()
        self.observer.on_breaker(True, reason)
        log.error(
            "circuit breaker open: sending stopped",
            reason=reason,
            action=self.settings.on_auth_failure,
        )
        # Give every queued claim back untouched.
        while self._s.queue:
            conv = self._s.queue.popleft()
            self._finish(conv, self._update(conv, next_send_at=conv.next_send_at, last_error=None))
        if self.settings.on_auth_failure == "exit":
            self.request_stop()
        else:
            self._spawn(self._probe_later(), "breaker-probe")

    async def _probe_later(self) -> None:
        await self._sleep(self.settings.auth_probe_s)
        if self._stop.is_set():
            return
        log.info("circuit breaker half-open: probing with the next due message")
        # Half-open: one send at a time until a success closes the breaker.
        self._saved_concurrency = self.concurrency
        self.concurrency = 1
        self._s.breaker_open = False
        self._breaker_closed.set()

    def _close_breaker(self) -> None:
        if self._saved_concurrency:
            self.concurrency, self._saved_concurrency = self._saved_concurrency, 0
        self._s.breaker_open = False
        self._breaker_closed.set()
        self.observer.on_breaker(False, None)
        log.info("circuit breaker closed: sending resumed")

    # ----------------------------------------------------------------- shutdown
    @staticmethod
    async def _finish_tasks(tasks: list[asyncio.Task[Any]], grace_s: float) -> None:
        """Let `tasks` return by themselves within `grace_s`, then cancel the rest."""
        if not tasks:
            return
        if grace_s > 0:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
        else:
            late = {t for t in tasks if not t.done()}
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _shutdown(
        self, workers: list[asyncio.Task[Any]], side: list[asyncio.Task[Any]]
    ) -> None:
        deadline = self.settings.shutdown_deadline_s
        # Every task watches the stop event and returns at its next step. Cancelling one
        # in the middle of a database call could leave its transaction (and, on SQLite,
        # the write lock) open until the connection is collected: only stragglers are
        # cancelled.
        await self._finish_tasks(workers, STOP_GRACE_S)
        # Unsent claims go back to the pool at once, unchanged.
        unsent = [c.id for c in self._s.queue]
        self._s.queue.clear()
        for cid in unsent:
            self._s.held.pop(cid, None)
        sends = [t for t in self._tasks if t.get_name() == "dripline-send"]
        if sends:
            _, still = await asyncio.wait(sends, timeout=deadline)
            for task in still:
                task.cancel()
            if still:
                log.warning(
                    "shutdown deadline passed; in-flight sends cancelled", cancelled=len(still)
                )
                await asyncio.gather(*still, return_exceptions=True)
        await self._finish_tasks(side, STOP_GRACE_S)
        await self._finish_tasks(list(self._tasks), 0.0)
        with contextlib.suppress(Exception):
            await self._flush()
        leftovers = unsent + list(self._s.held)
        with contextlib.suppress(Exception):
            if leftovers:
                await self.store.release(leftovers, self.worker_id)
        with contextlib.suppress(Exception):
            await self.store.unregister(self.worker_id)
        log.info(
            "dispatcher stopped",
            sent=self.stats.sent,
            failed=self.stats.failed,
            released=len(leftovers),
        )
