"""The store's public types and constants: what goes in and comes out of `Store`.

Plain frozen dataclasses and tuples, no SQLAlchemy: the dispatcher, the inbox
processor, the server and the in-memory store use them without importing a driver.
All datetimes are aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

__all__ = [
    "ACTIVE_STATES",
    "CANCELLED",
    "CONVERSATION_STATES",
    "EVIDENCE_SENDS",
    "LEASE_LOST",
    "MESSAGE_STATUSES",
    "NONFINAL_STATUSES",
    "OPT_OUT_KIND",
    "PURPOSES",
    "STATUS_RANK",
    "THROUGHPUT_WINDOWS_S",
    "CancelOutcome",
    "Claim",
    "Conversation",
    "ConversationChange",
    "ConversationUpdate",
    "EnrollResult",
    "Enrollment",
    "Inbound",
    "InboxEntry",
    "InboxRow",
    "Message",
    "MessageUpdate",
    "NewInbound",
    "Outcome",
    "PhoneConversations",
    "Refusal",
    "Reservation",
    "ReservationResult",
    "StatusResult",
    "StatusUpdate",
    "Suppression",
    "WorkerInfo",
]

if TYPE_CHECKING:
    from dripline.store.webhook_types import (
        CancelOutcome,
        ConversationChange,
        InboxRow,
        NewInbound,
        PhoneConversations,
        Refusal,
        StatusResult,
        StatusUpdate,
    )

# The webhook processor's and the API's types live in `webhook_types`, loaded when first
# asked for: the dispatcher (`run --once`) never builds their classes (issue 14).
_WEBHOOK_TYPES = frozenset(
    (
        "CancelOutcome",
        "ConversationChange",
        "InboxRow",
        "NewInbound",
        "PhoneConversations",
        "Refusal",
        "StatusResult",
        "StatusUpdate",
    )
)


def __getattr__(name: str) -> Any:
    if name in _WEBHOOK_TYPES:
        from dripline.store import webhook_types

        return getattr(webhook_types, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Conversation states. Only the active ones are ever due.
CONVERSATION_STATES = (
    "pending",
    "in_progress",
    "awaiting_reply",
    "completed",
    "failed",
    "opted_out",
    "cancelled",  # by the operator, through the API
)
ACTIVE_STATES = ("pending", "in_progress", "awaiting_reply")
# The state of a conversation stopped through the API: final, never due again, and (being
# inactive) no obstacle to enrolling the same phone in the same flow again.
CANCELLED = "cancelled"
# What a conversation's next due action is for.
PURPOSES = ("question", "reminder", "fallback", "timeout")
# Message statuses: `pending` = not sent yet, safe to (re)send; `sending` = the HTTP call
# may be under way; `unknown` = a send whose outcome was lost (crash, read timeout).
MESSAGE_STATUSES = ("pending", "sending", "sent", "delivered", "read", "failed", "unknown")
# Message statuses a dispatcher's own write may replace; later ones came from a webhook
# (or an earlier worker) and are never downgraded by `record_results`.
NONFINAL_STATUSES = ("pending", "sending", "unknown")
# How far along a message is. A status webhook only ever raises the rank: `read` then a
# late `delivered` stays `read`. `failed` outranks `sent` (Meta reports a send it
# accepted as undeliverable) but not `delivered`/`read`, which prove it arrived.
STATUS_RANK: Mapping[str, int] = {
    "pending": 0,
    "sending": 0,
    "unknown": 0,
    "sent": 1,
    "failed": 2,
    "delivered": 3,
    "read": 4,
}
# `reserve` answers this `prior_status` when the caller does not hold the lease.
LEASE_LOST = "lease_lost"
# `status_evidence` looks at this many sends made after an unknown one (the ones that
# matter: the intake must have been up from its attempt to their statuses).
EVIDENCE_SENDS = 1_000

# Inbound rows with this kind are opt-out keywords, not answers.
OPT_OUT_KIND = "opt_out"
# Throughput windows, as `dripline status` shows them (like a load average).
THROUGHPUT_WINDOWS_S = (60, 300, 900)


# the rows ---------------------------------------------------------------------------
# One type per table row, every column, in the table's column order (the SQL backends
# build them positionally; tests/unit/test_store_types.py checks the order).
@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation row: what a claim returns, the API shows, the webhook moves.

    Satisfies flows' `ConversationLike`. `fields` is never None (empty when unset).
    """

    id: int
    phone: str
    flow: str
    step: int
    purpose: str
    state: str
    next_send_at: datetime | None
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_inbound_at: datetime | None
    last_error: str | None
    name: str | None
    timezone: str | None
    sender: str | None
    fields: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    # The user's WhatsApp ID from the send response (digits; None until a send was
    # accepted): replies are matched by it first (see `WebhookTx.conversations_for`).
    wa_id: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A messages row: one (conversation, step, purpose) send, ever."""

    id: int
    conversation_id: int
    step: int
    purpose: str
    sender: str | None
    wamid: str | None
    status: str
    error_code: int | None
    error_title: str | None
    attempts: int
    due_at: datetime | None
    sent_at: datetime | None
    latency_ms: float | None
    status_at: datetime | None
    created_at: datetime
    updated_at: datetime
    webhook_at: datetime | None  # when a status webhook first moved the row
    reserved_at: datetime | None  # when it was last reserved for a send


@dataclass(frozen=True, slots=True)
class Inbound:
    """An inbound_messages row: an answer, an opt-out keyword, or a message that
    answers nothing (`step` None); `conversation_id` None for an unknown sender."""

    id: int
    wamid: str
    conversation_id: int | None
    phone: str
    step: int | None
    kind: str
    body: str | None
    received_at: datetime
    _: KW_ONLY
    # The typed answer (see NewInbound); None on rows older than migration 0005.
    answer_kind: str | None = None
    answer_option: str | None = None
    answer_number: float | None = None
    valid: bool | None = None
    # The business phone number id it was sent to (`metadata.phone_number_id`); None:
    # the default number, or not known (rows before migration 0006).
    sender: str | None = None


@dataclass(frozen=True, slots=True)
class Suppression:
    """A suppressions row: `phone` (E.164) opted out of messages from business number
    `sender` (a phone number id; "" when it was not known), and why."""

    sender: str
    phone: str
    reason: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """An inbox row: one stored webhook body and what processing made of it."""

    id: int
    received_at: datetime
    body: str
    processed_at: datetime | None
    error: str | None


# enrollment ------------------------------------------------------------------
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
    # The caller states the user opted in again: a suppression of this number (a STOP,
    # 131050) is lifted instead of refusing the enrollment.
    opt_in: bool = False


@dataclass(frozen=True, slots=True)
class EnrollResult:
    id: int
    created: bool  # False: an active conversation for (phone, flow) already existed


# dispatch ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Claim:
    """What `Store.claim_next` leased, and the earliest `next_send_at` among the active
    rows left unleased after it (None: none), as `next_due_at` would say."""

    conversations: list[Conversation]
    next_due_at: datetime | None


@dataclass(frozen=True, slots=True)
class Reservation:
    """Mark (conversation, step, purpose) as `sending` just before its HTTP call."""

    conversation_id: int
    step: int
    purpose: str
    due_at: datetime | None
    sender: str | None = None
    # at-least-once: also take over a row left `sending`/`unknown` and send again.
    resend_unknown: bool = False


@dataclass(frozen=True, slots=True)
class ReservationResult:
    """`ok` True: the message row is now `sending` and the caller may send.

    Otherwise `prior_status` says why not: `sending` (a crashed worker's send, now marked
    `unknown`), `unknown`, or a final status (`sent`, `delivered`, `read`, `failed`) that a
    webhook or an earlier worker already wrote; `wamid` and `error_code` come with it.
    `reserved_at` is when the row was first reserved (the evidence rule compares it).
    """

    conversation_id: int
    message_id: int
    ok: bool
    prior_status: str | None
    attempts: int
    wamid: str | None = None
    error_code: int | None = None
    status_at: datetime | None = None
    reserved_at: datetime | None = None


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

    The write only applies while `worker_id` still holds a live lease: a worker whose
    lease lapsed cannot overwrite what happened meanwhile (another worker's claim, or a
    STOP the inbox processor applied once the lease was no longer live).
    """

    conversation_id: int
    state: str
    step: int
    purpose: str
    next_send_at: datetime | None
    attempts: int
    last_error: str | None = None
    # The WhatsApp ID the send response reported (`contacts[0].wa_id`); None: unchanged.
    wa_id: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claimed conversation: written by `record_results`."""

    conversation: ConversationUpdate
    message: MessageUpdate | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A dispatcher's heartbeat row."""

    id: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    rate_per_s: float
    concurrency: int
    policy: str
    stats: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (datetimes as ISO strings)."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["heartbeat_at"] = self.heartbeat_at.isoformat()
        data["stats"] = dict(self.stats)
        return data


# the operator's view ---------------------------------------------------------------
