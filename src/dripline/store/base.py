"""The store contract: every query the rest of dripline needs, and nothing else.

The dispatcher, server and CLI call these methods; no SQL lives outside `dripline.store`.
Two backends implement it (SQLite, PostgreSQL) and one contract test suite runs on both.
All datetimes are aware UTC; `now` is passed in so callers (and tests) own the clock.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "BacklogCounts",
    "ClaimedConversation",
    "ConversationUpdate",
    "EnrollResult",
    "Enrollment",
    "MessageUpdate",
    "Outcome",
    "Reservation",
    "ReservationResult",
    "Store",
    "WorkerInfo",
]


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A conversation to start: `phone` already E.164, `at` None means now."""

    phone: str
    flow: str
    at: datetime | None = None
    name: str | None = None
    timezone: str | None = None
    sender: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EnrollResult:
    id: int
    created: bool  # False: an active conversation for (phone, flow) already existed


@dataclass(frozen=True, slots=True)
class ClaimedConversation:
    """A due conversation leased to one worker until `lease_expires_at`."""

    id: int
    phone: str
    flow: str
    step: int
    purpose: str
    state: str
    attempts: int
    next_send_at: datetime
    lease_expires_at: datetime
    last_inbound_at: datetime | None
    name: str | None
    timezone: str | None
    sender: str | None
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Reservation:
    """Mark (conversation, step, purpose) as `sending` just before its HTTP call."""

    conversation_id: int
    step: int
    purpose: str
    due_at: datetime
    sender: str | None = None
    # at-least-once: also take over a row left `sending`/`unknown` and send again.
    resend_unknown: bool = False


@dataclass(frozen=True, slots=True)
class ReservationResult:
    """`ok` True: the message row is now `sending` and the caller may send.

    Otherwise `prior_status` says why not: `sending` (a crashed worker's send, now marked
    `unknown`), `unknown`, or a final status (`sent`, `delivered`, `read`, `failed`) that a
    webhook or an earlier worker already wrote; `wamid` and `error_code` come with it.
    """

    conversation_id: int
    message_id: int
    ok: bool
    prior_status: str | None
    attempts: int
    wamid: str | None = None
    error_code: int | None = None
    status_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MessageUpdate:
    """New values for one messages row (by id)."""

    message_id: int
    status: str
    wamid: str | None = None
    error_code: int | None = None
    error_title: str | None = None
    sent_at: datetime | None = None
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ConversationUpdate:
    """New values for one conversation; the write also releases its lease.

    The write only applies while `worker_id` still holds the lease, so a worker whose
    lease lapsed (and was re-claimed elsewhere) cannot overwrite the new owner's work.
    """

    conversation_id: int
    state: str
    step: int
    purpose: str
    next_send_at: datetime | None
    attempts: int
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claimed conversation: written by `record_results`."""

    conversation: ConversationUpdate
    message: MessageUpdate | None = None


@dataclass(frozen=True, slots=True)
class BacklogCounts:
    due_now: int
    overdue_1m: int
    due_next_hour: int
    leased: int
    by_state: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    rate_per_s: float
    concurrency: int
    policy: str
    stats: Mapping[str, Any] = field(default_factory=dict)


class Store(ABC):
    """The database, as dripline uses it."""

    backend: str

    # lifecycle -------------------------------------------------------------
    @abstractmethod
    async def close(self) -> None:
        """Dispose of the connection pool."""

    # enrollment ------------------------------------------------------------
    @abstractmethod
    async def enroll(self, items: Sequence[Enrollment], now: datetime) -> list[EnrollResult]:
        """Insert conversations in bulk (state `pending`, `next_send_at` = at or now).

        Idempotent on (phone, flow) among active conversations: an existing one is
        returned with `created=False`. Results are in input order. All or nothing.
        Wakes sleeping dispatchers when a new row is due earlier than they planned.
        """

    # dispatch --------------------------------------------------------------
    @abstractmethod
    async def claim_due(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> list[ClaimedConversation]:
        """Atomically lease up to `limit` due active conversations, earliest first.

        Due: `next_send_at <= now` and no live lease. A row is never handed to two
        claimers while its lease is live; an expired lease makes it claimable again.
        """

    @abstractmethod
    async def reserve(
        self, items: Sequence[Reservation], worker_id: str, now: datetime
    ) -> list[ReservationResult]:
        """Write `sending` message rows before their HTTP calls, in one transaction.

        New (conversation, step, purpose): insert `sending`, attempts 1. Existing
        `pending`: set `sending`, attempts + 1. Existing `sending` (left by a crashed
        worker): set `unknown`, not ok (unless `resend_unknown`). Anything else: not ok,
        the caller decides from `prior_status`. Results are in input order.
        """

    @abstractmethod
    async def record_results(
        self, outcomes: Sequence[Outcome], worker_id: str, now: datetime
    ) -> int:
        """Write a batch of outcomes in one transaction; returns conversations updated.

        Conversation writes apply only where `worker_id` still holds the lease, and
        release it. Message writes apply by message id.
        """

    @abstractmethod
    async def release(self, conversation_ids: Sequence[int], worker_id: str) -> int:
        """Give back leases without changing anything else (graceful shutdown)."""

    @abstractmethod
    async def extend_leases(
        self, conversation_ids: Sequence[int], worker_id: str, lease_ttl_s: float, now: datetime
    ) -> int:
        """Push out the leases this worker still holds (long queues behind a slow API)."""

    @abstractmethod
    async def next_due_at(self, now: datetime) -> datetime | None:
        """The earliest `next_send_at` among active, unleased conversations."""

    @abstractmethod
    def wakeup_event(self) -> asyncio.Event:
        """An event set whenever enrollment makes work due earlier (LISTEN/NOTIFY on
        PostgreSQL, in-process on SQLite); the caller clears it."""

    async def last_webhook_at(self) -> datetime | None:
        """When the newest webhook delivery reached the inbox (None: never).

        The dispatcher uses it as evidence: if deliveries kept arriving long after a send
        went `unknown` and none mentioned it, the API never accepted that send.
        """
        return None

    # operator's view -------------------------------------------------------
    @abstractmethod
    async def backlog(self, now: datetime) -> BacklogCounts:
        """Due now, overdue by a minute, due within the hour, leased, and counts by state."""

    @abstractmethod
    async def heartbeat(self, worker: WorkerInfo, live_after_s: float) -> list[WorkerInfo]:
        """Upsert this worker's row; return the live workers (heartbeat within
        `live_after_s` of `worker.heartbeat_at`), this one included."""

    @abstractmethod
    async def unregister(self, worker_id: str) -> None:
        """Remove a worker's row (clean shutdown)."""
