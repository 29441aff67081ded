"""The store's types for the webhook processor and the API: inbox rows, status updates
and their refusals, inbound messages, conversation changes, cancellations.

Split from `types.py`, which re-exports them (loaded on first use): the dispatcher
never needs them, and each frozen dataclass costs its import about a millisecond of
generated methods (`dripline run --once` pays every import; issue 14).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime

# At run time, not only for type checking: annotations stay resolvable (get_type_hints).
from dripline.store.types import Conversation

__all__ = [
    "CancelOutcome",
    "ConversationChange",
    "InboxRow",
    "NewInbound",
    "PhoneConversations",
    "Refusal",
    "StatusResult",
    "StatusUpdate",
]


# the API -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """`result`: 'cancelled' (now), 'already' (was cancelled), 'busy' (a dispatcher holds
    its lease right now), 'final' (completed, failed or opted out), 'missing'."""

    result: str
    record: Conversation | None


# webhooks: the inbox and its processing transaction ---------------------------------
@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    body: str


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One status event: `message_id` is the `biz_opaque_callback_data` we sent, if any."""

    wamid: str
    status: str  # sent, delivered, read or failed
    at: datetime
    message_id: int | None = None
    error_code: int | None = None
    error_title: str | None = None
    # The user's WhatsApp ID as the status reports it (`recipient_id`, digits); None when
    # it has none we can use (absent for a username-only user). See `learn_wa_ids`.
    recipient_id: str | None = None


@dataclass(frozen=True, slots=True)
class StatusResult:
    applied: int  # rows moved forwards
    unchanged: int  # matched, but the row was already as far along (a repeat)
    unmatched: int  # no message row for the wamid or the callback id
    busy: frozenset[str]  # wamids whose row another transaction holds: retry later
    # The wamids of `unmatched` updates (a `failed` status carries no callback id, so
    # one that outruns the dispatcher's record of its wamid matches nothing yet).
    unmatched_wamids: frozenset[str] = frozenset()
    # Each matched update's wamid -> (its message's conversation, that conversation's
    # `wa_id` as read here): what the inbox needs to decide which WhatsApp IDs a status
    # teaches (`dripline.inbox.recipients`). Statuses of a refused earlier attempt
    # (counted `unchanged`) are not in it.
    matched: Mapping[str, tuple[int, str | None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A `failed` status about to move one of our messages (one not yet failed, delivered
    or read), with the message's key and its conversation as it stands.

    `attempts` is the message row's (reservations so far). `busy`: a dispatcher holds
    the conversation (live lease), or another transaction locks it (PostgreSQL): the
    status must wait, since its reaction cannot be written yet. `superseded`: see below.
    """

    wamid: str
    message_id: int
    step: int
    purpose: str
    attempts: int
    error_code: int | None
    error_title: str | None
    conversation: Conversation
    busy: bool
    # Another conversation of the same phone and flow is active (enrolled again after this
    # one ended): this one cannot be made active again to retry or fall back.
    superseded: bool = False


@dataclass(frozen=True, slots=True)
class PhoneConversations:
    """One sender's conversations: the active ones (locked for this transaction), whether
    any of them is busy (leased by a dispatcher or locked by another transaction), and
    the newest conversation of any state (for recording a message with no active one)."""

    active: tuple[Conversation, ...]
    busy: bool
    latest_id: int | None


@dataclass(frozen=True, slots=True)
class NewInbound:
    """An inbound message to record. The typed answer: `answer_kind` "option" (the id in
    `answer_option`), "number" (`answer_number`) or "text" (the body is the answer);
    `valid` False for a reply that did not answer its question, None when it answers none."""

    wamid: str
    conversation_id: int | None
    phone: str
    step: int | None
    kind: str
    body: str | None
    received_at: datetime
    # Keyword-only from here: two branches added optional fields at once, and a
    # positional one would land in the wrong field.
    _: KW_ONLY
    answer_kind: str | None = None
    answer_option: str | None = None
    answer_number: float | None = None
    valid: bool | None = None
    sender: str | None = None  # the business number it was sent to; None: the default


@dataclass(frozen=True, slots=True)
class ConversationChange:
    """New values for a conversation the webhook moves (never a leased one)."""

    id: int
    state: str
    step: int
    purpose: str
    next_send_at: datetime | None
    attempts: int
    last_error: str | None
    last_inbound_at: datetime | None
