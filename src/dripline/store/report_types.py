"""The store's read models for operators: backlog and lag reports, pool and inbox
usage, webhook errors, snapshots, health, imports and retention results (split from
`types.py`, which keeps the rows and the dispatch and webhook contracts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from dripline.store.types import Conversation, Inbound, InboxEntry, Message, Suppression, WorkerInfo

__all__ = [
    "BacklogCounts",
    "BacklogSnapshot",
    "ErrorCount",
    "ForgetResult",
    "ImportedConversation",
    "InboxBacklog",
    "LagSummary",
    "NewWebhookError",
    "PoolUsage",
    "PruneResult",
    "StoreHealth",
    "StoreSnapshot",
    "WebhookErrorCount",
]


@dataclass(frozen=True, slots=True)
class BacklogCounts:
    due_now: int
    overdue_1m: int
    due_next_hour: int
    leased: int
    by_state: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class BacklogSnapshot:
    """What is waiting: due now (unleased), overdue by more than a minute, due within
    the next hour (not yet due), and leased (claimed, being sent)."""

    due_now: int
    overdue_1m: int
    due_next_hour: int
    leased: int


@dataclass(frozen=True, slots=True)
class LagSummary:
    """Schedule lag (sent_at minus due_at) of the newest `samples` sends in the window."""

    samples: int
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float
    latency_p50_ms: float
    latency_p99_ms: float


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """Messages currently in an error state with this code and status."""

    code: int | None
    status: str
    count: int


@dataclass(frozen=True, slots=True)
class PoolUsage:
    in_use: int
    size: int


@dataclass(frozen=True, slots=True)
class InboxBacklog:
    waiting: int  # stored, not yet processed (including rows left waiting on a lease)
    errors: int  # processed with an error (malformed, or could not be applied)
    # When the oldest row still waiting arrived: every webhook received before it has
    # been applied (the evidence rule needs that; None: nothing waits).
    oldest_waiting_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewWebhookError:
    """A value-level webhook error (`entry[].changes[].value.errors[]`) to record: a
    problem Meta reports for the number or account, tied to no message."""

    code: int
    phone_number_id: str | None
    account_id: str | None
    title: str | None
    details: str | None
    inbox_id: int | None = None


@dataclass(frozen=True, slots=True)
class WebhookErrorCount:
    """Value-level webhook errors with one code for one number, since some time."""

    code: int
    phone_number_id: str | None
    count: int
    last_at: datetime
    details: str | None  # the latest one's details (Meta's text, never user content)


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """Every row of every table, by id (workers by id), for tests and invariant checks."""

    conversations: tuple[Conversation, ...]
    messages: tuple[Message, ...]
    inbound: tuple[Inbound, ...]
    inbox: tuple[InboxEntry, ...]
    workers: tuple[WorkerInfo, ...]
    suppressions: tuple[Suppression, ...] = ()


# moving in and health ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ImportedConversation:
    """A conversation moved in from another scheduler, already part-way through its
    flow: at `step`, in an active `state`, its next action (`purpose`) due at
    `next_send_at`. `phone` already E.164."""

    phone: str
    flow: str
    step: int
    purpose: str
    state: str
    next_send_at: datetime
    name: str | None = None
    timezone: str | None = None
    sender: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What readiness needs from the database, read in one short transaction."""

    schema_revision: str | None  # None: no dripline schema
    inbox_waiting: int
    inbox_oldest_waiting_at: datetime | None


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What `Store.prune` removed (see docs/data.md)."""

    inbox_rows: int  # processed raw webhook bodies deleted
    inbound_bodies: int  # texts of inbound messages that answered nothing, cleared


@dataclass(frozen=True, slots=True)
class ForgetResult:
    """What `Store.forget` erased for one phone number."""

    conversations: int
    messages: int
    inbound: int
    inbox_rows: int
    # Raw bodies naming the number that are not processed yet: left for the processor,
    # erased by running forget again once it has caught up.
    inbox_waiting: int
