"""The store contract: every query the rest of dripline needs, and nothing else.

The dispatcher, the inbox processor, the server, status, export and the CLI call these
methods; no SQL lives outside `dripline.store`, and nothing outside it knows which
backend it holds. Three backends implement the contract (SQLite and PostgreSQL in
`store/sql/`, an in-memory one in `store/memory.py`) and one contract test suite runs on
all three. All datetimes are aware UTC; `now` is passed in so callers (and tests and the
simulator) own the clock.

Webhook processing is one transaction per batch of inbox rows: `webhook_transaction()`
yields a `WebhookTx` (`store/webhook_tx.py`), whose methods read and write inside it;
leaving the block commits, an exception rolls everything back.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dripline.store.results_types import ResultsQueries
from dripline.store.types import (
    THROUGHPUT_WINDOWS_S,
    Claim,
    Conversation,
    ConversationUpdate,
    Enrollment,
    EnrollResult,
    Inbound,
    Message,
    MessageUpdate,
    Outcome,
    Reservation,
    ReservationResult,
    WorkerInfo,
)
from dripline.store.webhook_tx import WebhookTx

if TYPE_CHECKING:
    # Read models for operators (status, metrics, the server): only annotations here, so
    # the dispatcher's start-up does not build their classes (`run --once`, issue 14).
    from dripline.store.report_types import (
        BacklogCounts,
        BacklogSnapshot,
        ErrorCount,
        ForgetResult,
        ImportedConversation,
        InboxBacklog,
        LagSummary,
        PoolUsage,
        PruneResult,
        StoreHealth,
        StoreSnapshot,
        WebhookErrorCount,
    )
    from dripline.store.webhook_types import (
        CancelOutcome,
    )

__all__ = [
    "BacklogCounts",
    "Claim",
    "Conversation",
    "ConversationUpdate",
    "EnrollResult",
    "Enrollment",
    "MessageUpdate",
    "Outcome",
    "Reservation",
    "ReservationResult",
    "Store",
    "WebhookTx",
    "WorkerInfo",
]


def __getattr__(name: str) -> Any:
    # `BacklogCounts` was importable from here; it now loads when asked for.
    if name == "BacklogCounts":
        from dripline.store import report_types

        return report_types.BacklogCounts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Store(ResultsQueries, ABC):
    """The database, as dripline uses it."""

    backend: str
    # Where the data is, for messages: a file path, host:port/db (never a password).
    target: str

    # lifecycle -------------------------------------------------------------
    @abstractmethod
    async def close(self) -> None:
        """Release connections and listeners."""

    @abstractmethod
    def wakeup_event(self) -> asyncio.Event:
        """An event set whenever enrollment or a webhook makes work due earlier
        (LISTEN/NOTIFY on PostgreSQL, in-process otherwise); the caller clears it."""

    async def wakeup_ready(self) -> None:
        """Wait until `wakeup_event()` is really listening (PostgreSQL: LISTEN issued).

        Optional for callers: a notification sent before that is simply missed, and the
        dispatcher's poll ceiling covers it. Tests use it to avoid that race."""
        return

    def pool_usage(self) -> PoolUsage | None:
        """Connections checked out of the pool now (no query); None when there is no
        pool that counts them."""
        return None

    # enrollment ------------------------------------------------------------
    @abstractmethod
    async def enroll(self, items: Sequence[Enrollment], now: datetime) -> list[EnrollResult]:
        """Insert conversations in bulk (state `pending`, `next_send_at` = at or now).

        Idempotent on (phone, flow) among active conversations: an existing one is
        returned with `created=False`. Results are in input order. All or nothing.
        Wakes sleeping dispatchers when a new row is due earlier than they planned.

        Suppressed numbers (`WebhookTx.add_suppressions`; see `store.identity.blocking`)
        raise SuppressedError naming the first such item's index, and nothing is written;
        an item with `opt_in` lifts the suppressions that would block it instead.
        """

    @abstractmethod
    async def import_conversations(
        self, items: Sequence[ImportedConversation], now: datetime
    ) -> list[EnrollResult]:
        """Insert conversations moved in from another scheduler, each at its own step,
        state, purpose and due time (`dripline import --from-postgres`). All or nothing.

        Idempotent on (phone, flow) in *any* state, unlike `enroll`: re-running an
        import never starts a conversation again, even one that has finished since; an
        existing one is returned with `created=False`. Results are in input order. Wakes
        sleeping dispatchers like `enroll`.
        """

    # dispatch --------------------------------------------------------------
    @abstractmethod
    async def claim_due(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> list[Conversation]:
        """Atomically lease up to `limit` due active conversations, earliest first.

        Due: `next_send_at <= now` and no live lease (`lease_expires_at >= now`). A row is
        never handed to two claimers while its lease is live; an expired lease makes it
        claimable again.
        """

    @abstractmethod
    async def claim_next(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> Claim:
        """`claim_due`, then `next_due_at(now)`, in one transaction: a claimer that got
        fewer rows than it asked for learns how long it may sleep without another round
        trip (issue 14: the trickle's fourth transaction per message)."""

    @abstractmethod
    async def reserve(
        self, items: Sequence[Reservation], worker_id: str, now: datetime
    ) -> list[ReservationResult]:
        """Write `sending` message rows before their HTTP calls, in one transaction.

        New (conversation, step, purpose): insert `sending`, attempts 1. Existing
        `pending`: set `sending`, attempts + 1. Existing `sending` reserved at this very
        `now`: ok, unchanged (the caller's own retry of a call whose answer was lost:
        retry with the same `now`). Other existing `sending` (left by a crashed
        worker): set `unknown`, not ok (unless `resend_unknown`). Anything else: not ok,
        the caller decides from `prior_status`. An item whose conversation `worker_id`
        does not hold a live lease on (owner, not expired at `now`) is not ok with
        `prior_status=LEASE_LOST` and writes nothing. Results are in input order.
        """

    @abstractmethod
    async def record_results(
        self, outcomes: Sequence[Outcome], worker_id: str, now: datetime
    ) -> int:
        """Write a batch of outcomes in one transaction; returns conversations updated.

        Conversation writes apply only where `worker_id` still holds a live lease (owner,
        not expired at `now`), and release it. Message writes apply by message id; they
        replace the status only while it is `pending`/`sending`/`unknown` (a webhook's
        `delivered` is never downgraded); `wamid`, `sent_at` and `latency_ms` fill in
        when given.
        """

    @property
    def claims_with_record(self) -> bool:
        """`record_and_claim` is one transaction: outcomes may ride with a claim."""
        return False

    async def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        limit: int,
        lease_ttl_s: float,
        worker_id: str,
        now: datetime,
    ) -> tuple[int, Claim]:
        """`record_results(outcomes)`, then `claim_next`; where `claims_with_record`, in
        one transaction (the claim sees the record's writes; a failure writes neither).
        This default is the two calls, which a failure can leave half done."""
        recorded = await self.record_results(outcomes, worker_id, now) if outcomes else 0
        return recorded, await self.claim_next(limit, lease_ttl_s, worker_id, now)

    @abstractmethod
    async def release(self, conversation_ids: Sequence[int], worker_id: str) -> int:
        """Give back leases without changing anything else (graceful shutdown)."""

    @abstractmethod
    async def extend_leases(
        self, conversation_ids: Sequence[int], worker_id: str, lease_ttl_s: float, now: datetime
    ) -> list[int]:
        """Push out the leases this worker still holds live (owner and not expired);
        returns the ids extended, sorted. A lease that lapsed stays lapsed: the worker
        must not send for that conversation any more."""

    @abstractmethod
    async def next_due_at(self, now: datetime) -> datetime | None:
        """The earliest `next_send_at` among active, unleased conversations."""

    @abstractmethod
    async def status_evidence(
        self, messages: Sequence[tuple[int, datetime]], before: datetime
    ) -> dict[int, datetime]:
        """For each (message id, reserved at): the earliest first-status-webhook time,
        at or before `before`, among the next EVIDENCE_SENDS other messages whose last
        reservation was at the same time or later; messages without one are left out.

        This is the evidence that an unknown send was never accepted: Meta reports every
        message it accepts, so statuses for sends made with or after it, while it has
        none, mean it never arrived (see dripline.dispatcher.reconcile).
        """

    @abstractmethod
    async def intake_uptime(self, since: datetime) -> list[tuple[datetime, datetime]]:
        """When a webhook receiver was up, from `since` on: each receiver run's
        (started_at, last heartbeat), ordered by start."""

    @abstractmethod
    async def record_intake(
        self, intake_id: str, started_at: datetime, now: datetime, *, keep_s: float
    ) -> None:
        """A webhook receiver is up (`dripline serve`): upsert its heartbeat, and forget
        receiver runs whose last heartbeat is older than `keep_s`."""

    @abstractmethod
    async def heartbeat(self, worker: WorkerInfo, live_after_s: float) -> list[WorkerInfo]:
        """Upsert this worker's row; return the live workers (heartbeat within
        `live_after_s` of `worker.heartbeat_at`), this one included, by id."""

    @abstractmethod
    async def unregister(self, worker_id: str) -> None:
        """Remove a worker's row (clean shutdown)."""

    # conversations: the API and the export ---------------------------------
    @abstractmethod
    async def conversations_by_ids(self, ids: Sequence[int]) -> dict[int, Conversation]:
        """The conversations with these ids (missing ones are absent)."""

    @abstractmethod
    async def conversation_detail(
        self, conversation_id: int
    ) -> tuple[Conversation, list[Message], list[Inbound]] | None:
        """One conversation with its messages (by id) and inbound messages (by
        received_at, then id), or None."""

    @abstractmethod
    async def list_conversations(
        self,
        *,
        state: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        after_id: int = 0,
    ) -> list[Conversation]:
        """Conversations with id > `after_id`, in id order, filtered by state and flow
        (keyset paging: page ten thousand costs what page one does)."""

    @abstractmethod
    async def cancel_conversation(self, conversation_id: int, now: datetime) -> CancelOutcome:
        """Stop an active conversation unless a dispatcher holds a live lease on it
        (`lease_expires_at > now`: its result write would overwrite the cancel; the caller
        retries shortly). A cancelled conversation is final and never due again."""

    @abstractmethod
    def answer_pages(
        self, flow: str, *, page_size: int = 1_000
    ) -> AsyncIterator[list[tuple[Conversation, list[Inbound]]]]:
        """Every conversation of `flow` (by id) with its answers: inbound messages with a
        step, opt-out keywords excluded, by received_at then id. One page at a time,
        each its own short read, so a million rows never sit in memory."""

    @abstractmethod
    async def flows_in_use(self) -> set[str]:
        """The distinct flow names that have conversations."""

    # webhooks ----------------------------------------------------------------
    @abstractmethod
    async def insert_inbox(self, bodies: Sequence[str], now: datetime) -> None:
        """Store raw webhook bodies, all in one transaction (durable when this returns)."""

    @abstractmethod
    async def inbox_backlog(self) -> InboxBacklog:
        """Rows waiting to be processed, and rows processed with an error."""

    @abstractmethod
    def webhook_transaction(self) -> AbstractAsyncContextManager[WebhookTx]:
        """One write transaction for a batch of webhook events; wakes sleeping
        dispatchers after commit when it scheduled a step."""

    # retention (docs/data.md) ------------------------------------------------
    @abstractmethod
    async def prune(self, before: datetime) -> PruneResult:
        """Delete inbox rows processed before `before`, and clear the text of inbound
        messages received before it that answered nothing (`step` None). Answers,
        conversations and messages are kept; unprocessed inbox rows are never touched."""

    @abstractmethod
    async def forget(self, phone: str) -> ForgetResult:
        """Erase one person: the conversations of `phone` (E.164) with their messages,
        every inbound message from it, and the processed inbox bodies that name it
        (`"<digits>"` as a JSON string). Unprocessed bodies are counted, not deleted."""

    # the operator's view -----------------------------------------------------
    @abstractmethod
    async def backlog(self, now: datetime) -> BacklogCounts:
        """Due now, overdue by a minute, due within the hour, leased, and counts by state
        over the whole table (see `backlog_snapshot` for the cheap one).

        due_now / overdue_1m: active, unleased, next_send_at <= now (minus a minute);
        due_next_hour: active, now < next_send_at <= now + 1h; leased: any row whose lease
        expires at or after now."""

    @abstractmethod
    async def backlog_snapshot(self, now: datetime) -> BacklogSnapshot:
        """The backlog counts from the active rows due within the hour only (the partial
        due index): safe to poll every few seconds."""

    @abstractmethod
    async def conversations_by_state(self) -> dict[str, int]:
        """Conversation counts for every state (zero included)."""

    async def conversations_by_state_estimate(self, min_rows: int) -> dict[str, int] | None:
        """Estimated counts for every state, from the database's own statistics, when it
        keeps some and believes the table holds at least `min_rows` rows; else None (count
        exactly with `conversations_by_state`). An exact count reads the whole table (about
        0.5 s at 10,000,000 rows on PostgreSQL, bench scenario 16). Only PostgreSQL
        estimates."""
        return None

    @abstractmethod
    async def sent_counts(
        self, now: datetime, windows_s: Sequence[int] = THROUGHPUT_WINDOWS_S
    ) -> dict[int, int]:
        """Messages whose sent_at falls in each trailing window ending at `now`."""

    @abstractmethod
    async def lag_summary(
        self, now: datetime, *, window_s: float = 300.0, sample: int = 10_000
    ) -> LagSummary:
        """Lag (sent_at - due_at) and API latency percentiles of the newest `sample`
        sends within `window_s` (nearest rank; computed the same way on every backend)."""

    @abstractmethod
    async def error_counts(
        self, now: datetime, *, window_s: float = 900.0, error_scan: int = 200_000
    ) -> list[ErrorCount]:
        """Messages in an error state (failed, retry pending, outcome unknown) with a code
        or title, updated within `window_s`, among the newest `error_scan` message ids;
        by code and status, most frequent first."""

    @abstractmethod
    async def webhook_errors(self, since: datetime | None = None) -> list[WebhookErrorCount]:
        """Value-level webhook errors recorded after `since` (None: all of them), by code
        and phone number id: how many, the latest time and its details; most frequent
        first, then by code."""

    @abstractmethod
    async def live_workers(self, now: datetime, *, live_after_s: float = 10.0) -> list[WorkerInfo]:
        """Workers whose heartbeat is within `live_after_s` of `now`, by id."""

    @abstractmethod
    async def latency_samples_ms(self, *, limit: int = 20_000) -> list[float]:
        """The `latency_ms` of the newest `limit` sends that recorded one, newest first."""

    # health ------------------------------------------------------------------
    @abstractmethod
    async def health(self) -> StoreHealth:
        """The schema revision and the inbox's waiting rows, in one short read (for
        `/readyz`). Raises DatabaseUnavailable when the database does not answer. The
        in-memory store is always at this dripline's head revision."""

    # inspection ----------------------------------------------------------------
    @abstractmethod
    async def snapshot(self) -> StoreSnapshot:
        """Every row of every table, read in one transaction: for tests and the
        simulator's invariant checks. It reads whole tables: never on a production-size
        database."""
