"""What a batch of webhook events does, decided without I/O.

Statuses (`status_update`) move a `messages` row forwards only (see `STATUS_RANK`); a
`failed` status stores Meta's error code and title, and the dispatcher's classification
decides what follows when it next claims the conversation. A status carrying our
`biz_opaque_callback_data` (the message row id) resolves a send whose response was lost.

Inbound messages (`plan_inbound`):

- the sender's conversations are found by WhatsApp ID first (`wa_id`, learned from the
  send response, or from a status's `recipient_id` when that was lost: `recipients.py`),
  then by the number and its known variants (`dripline.phones`: Brazil's ninth digit,
  Mexico's 521, Argentina's 549);
- recorded once per wamid in `inbound_messages`; from a number with no conversation
  they are recorded with no conversation, never an error;
- the message is for the sender's active conversations on the business number it was
  sent to (`metadata.phone_number_id`; a conversation without a sender uses the default
  number); when none is on that number (a webhook naming a number we do not know), for
  all of them;
- each of those gets `last_inbound_at` (the 24-hour window is per user and business
  number, not per conversation);
- an opt-out keyword (trimmed, case-insensitive) moves each of those to `opted_out`:
  nothing more is ever sent to them; and the number (as it wrote, and as each of those
  conversations was enrolled) is suppressed for that business number, so enrolling it
  again is refused without a new opt-in (`Store.enroll`), even with no conversation;
- otherwise the reply answers the sender's waiting conversation: read as a typed answer
  (`flows.answers`: a tap's id, a matched option, a number in range, or invalid) and
  stored with it, it moves the conversation through `flow.on_answer` (the branch's
  step, a re-ask, or the step's `on_invalid`); the waiting conversation is one
  `awaiting_reply`, or one `pending`/`in_progress` whose current
  step waits for a reply and whose question already went out (a send the dispatcher
  recorded as `unknown` that a status webhook since resolved); a reply quoting one of
  our messages (`context.id`) goes to that message's conversation when it is one of
  them, else the most recently moved waiting one. A reply with no text and no tap (an
  image, a sticker) is recorded but does not advance the flow. Anything else is recorded
  against the step most recently asked and changes nothing.

Leases: a conversation a dispatcher holds (live lease) is not touched, because the
dispatcher's result write would overwrite ours: its messages are deferred (see
`InboxProcessor`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from dripline.errors import InputError
from dripline.flows import FlowRegistry, Transition
from dripline.flows.answers import Reply
from dripline.inbox.recipients import usable_wa_id
from dripline.store import (
    ACTIVE_STATES,
    OPT_OUT_KIND,
    Conversation,
    ConversationChange,
    NewInbound,
    PhoneConversations,
    StatusUpdate,
    Suppression,
)
from dripline.whatsapp.webhooks import InboundMessage, StatusEvent

__all__ = [
    "InboundEvent",
    "InboundPlan",
    "inbound_event",
    "plan_inbound",
    "status_update",
]

log = structlog.get_logger(__name__)

_MAX_ID = 2**63 - 1
_INT32 = 2**31 - 1
_STATUS_MAP = {"sent": "sent", "delivered": "delivered", "read": "read", "played": "read"}


def _clean(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text.replace("\x00", "")[:limit]


def _when(timestamp: int, now: datetime) -> datetime:
    # Meta sends Unix seconds; anything unrepresentable falls back to the processing time.
    if 0 < timestamp < 100_000_000_000:
        return datetime.fromtimestamp(timestamp, UTC)
    return now


def status_update(event: StatusEvent, now: datetime) -> StatusUpdate | None:
    """A parsed status as a store update; None for statuses that change no message
    (`deleted`, `warning`) and for ids no message of ours could have."""
    status = "failed" if event.status == "failed" else _STATUS_MAP.get(event.status)
    if status is None or not event.id or len(event.id) > 128 or "\x00" in event.id:
        return None
    message_id = None
    data = (event.biz_opaque_callback_data or "").strip()
    if data.isascii() and data.isdigit() and len(data) <= 19 and 0 < int(data) <= _MAX_ID:
        message_id = int(data)
    code = title = None
    if status == "failed" and event.errors:
        first = event.errors[0]
        code = first.code if -_INT32 <= first.code <= _INT32 else None
        title = _clean(first.title or first.message or first.details, 500)
    return StatusUpdate(
        wamid=event.id,
        status=status,
        at=_when(event.timestamp, now),
        message_id=message_id,
        error_code=code,
        error_title=title,
        recipient_id=usable_wa_id(event.recipient_id),
    )


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """An inbound message ready to apply: `phone` in E.164 (the sender's WhatsApp ID),
    from inbox row `inbox_id`; `number` the business phone number id it was sent to
    (`metadata.phone_number_id`) and `context_id` the wamid it replies to, when known."""

    wamid: str
    phone: str
    kind: str
    text: str | None
    at: datetime
    inbox_id: int = 0
    number: str | None = None
    context_id: str | None = None
    # A tap: the reply button's or list row's id, or a template quick-reply's payload.
    tap_id: str | None = None


def inbound_event(msg: InboundMessage, inbox_id: int, now: datetime) -> InboundEvent | None:
    """A parsed inbound message as an event; None when its ids cannot be stored."""
    digits = msg.from_.strip().lstrip("+")
    if not (digits.isascii() and digits.isdigit() and 4 <= len(digits) <= 15):
        return None
    if not msg.id or len(msg.id) > 128 or "\x00" in msg.id:
        return None
    return InboundEvent(
        wamid=msg.id,
        phone="+" + digits,
        kind=(_clean(msg.type, 16) or "unknown"),
        text=_clean(msg.text, 8_192),
        at=_when(msg.timestamp, now),
        inbox_id=inbox_id,
        number=_id_or_none(msg.phone_number_id),
        context_id=_id_or_none(msg.context_id),
        tap_id=_clean(msg.reply_id or msg.button_payload, 256),
    )


def _id_or_none(value: str | None) -> str | None:
    value = (value or "").strip()
    return value if value and len(value) <= 128 and "\x00" not in value else None


@dataclass(slots=True)
class InboundPlan:
    """What a batch of inbound messages does (see the module docstring)."""

    inserts: list[NewInbound] = field(default_factory=list)
    changes: dict[int, ConversationChange] = field(default_factory=dict)
    suppressions: list[Suppression] = field(default_factory=list)
    deferred: list[InboundEvent] = field(default_factory=list)
    advanced: int = 0
    invalid: int = 0  # replies that did not answer their question (re-asked)
    opted_out: int = 0
    unknown_sender: int = 0


def _is_opt_out(text: str | None, keywords: Iterable[str]) -> bool:
    if text is None:
        return False
    said = text.strip().casefold()
    return bool(said) and any(said == k.strip().casefold() for k in keywords)


def _waits(row: Conversation, flows: FlowRegistry, sent: set[tuple[int, int]]) -> bool:
    """True when a reply now answers the conversation's current step."""
    if row.state == "awaiting_reply":
        return True
    if row.state not in ("pending", "in_progress") or (row.id, row.step) not in sent:
        return False
    try:
        flow: Any = flows.get(row.flow)
    except InputError:
        return False
    expects = getattr(flow, "expects_reply", None)
    try:
        return bool(expects(row)) if expects is not None else False
    except InputError:
        return False


def _change(row: Conversation) -> ConversationChange:
    return ConversationChange(
        id=row.id,
        state=row.state,
        step=row.step,
        purpose=row.purpose,
        next_send_at=row.next_send_at,
        attempts=row.attempts,
        last_error=None,
        last_inbound_at=row.last_inbound_at,
    )


def _on_number(
    active: list[Conversation],
    number: str | None,
    default_sender: str | None,
    senders: frozenset[str],
) -> list[Conversation]:
    """The conversations on business number `number`: those whose sender (or, without
    one, the default number) is it. When none is: nothing if `number` is one of ours
    (`senders`: the user wrote to another of our numbers, whose conversations are not
    these), else all of them (a webhook naming a number we do not know, or none)."""
    if number is None:
        return active
    mine = [r for r in active if (r.sender or default_sender) in (number, None)]
    if mine or number in senders:
        return mine
    return active


def _stored_sender(number: str | None, default_sender: str | None) -> str | None:
    """`inbound_messages.sender`: NULL for the default number (as `conversations.sender`)."""
    return None if number in (None, "", default_sender) else number


def _quoted(
    rows: list[Conversation], event: InboundEvent, replied: Mapping[str, int]
) -> Conversation | None:
    """The conversation whose message the reply quotes (`context.id`), if among `rows`."""
    target = replied.get(event.context_id) if event.context_id else None
    return next((r for r in rows if r.id == target), None)


def _suppressions(
    event: InboundEvent, rows: list[Conversation], default_sender: str | None
) -> list[Suppression]:
    """An opt-out: the number as it wrote and as each conversation was enrolled, for the
    business number it wrote to ("" when no sender is known)."""
    reason = f"the user sent {(event.text or '').strip()[:40]!r}"
    pairs = {(event.number or default_sender or "", event.phone)}
    pairs |= {(event.number or r.sender or default_sender or "", r.phone) for r in rows}
    return [Suppression(sender, phone, reason, event.at) for sender, phone in sorted(pairs)]


def _answer(
    flows: FlowRegistry, row: Conversation, event: InboundEvent, now: datetime
) -> tuple[Transition | None, dict[str, Any]]:
    """The reply read as a typed answer to the row's step (`flows.answers`) and what it
    does: the next step, a re-ask, `on_invalid`, or nothing (None). The dict holds the
    typed answer's NewInbound fields."""
    flow = flows.get(row.flow)
    answer = flow.answer(row, Reply(event.text, event.tap_id))
    typed = {
        "answer_kind": answer.kind,
        "answer_option": answer.option,
        "answer_number": answer.number,
        "valid": answer.valid,
    }
    return flow.on_answer(row, answer, now), typed


def plan_inbound(
    events: Sequence[InboundEvent],
    phones: dict[str, PhoneConversations],
    sent: set[tuple[int, int]],
    flows: FlowRegistry,
    keywords: Iterable[str],
    now: datetime,
    *,
    replied: Mapping[str, int] | None = None,
    default_sender: str | None = None,
    senders: frozenset[str] = frozenset(),
) -> InboundPlan:
    """Decide what new (never recorded) inbound messages do, in the order they were sent.

    Pure: reads the conversations as locked for this transaction and returns the rows
    to insert and the conversation changes to write. `replied` maps our sends' wamids
    that replies quote to their conversation (`WebhookTx.replied_to`); `default_sender`
    is the phone number id conversations without a sender are sent from; `senders`
    every configured one (a message to one of them never moves another's conversations).
    """
    replied = replied or {}
    keywords = tuple(keywords)
    plan = InboundPlan()
    originals = {row.id: row for pc in phones.values() for row in pc.active}
    rows = dict(originals)
    errors: dict[int, str | None] = {}
    for event in sorted(events, key=lambda e: e.at):
        pc = phones.get(event.phone)
        opt_out = _is_opt_out(event.text, keywords)
        kind = OPT_OUT_KIND if opt_out else event.kind
        if pc is not None and pc.busy:
            plan.deferred.append(event)
            continue
        active = [rows[r.id] for r in pc.active if rows[r.id].state in ACTIVE_STATES] if pc else []
        active = _on_number(active, event.number, default_sender, senders)
        to = _stored_sender(event.number, default_sender)
        if opt_out:
            plan.suppressions += _suppressions(event, active, default_sender)
        if not active:
            # No conversation waits for it: keep it with the newest conversation, if any.
            latest = (pc.active[-1].id if pc.active else pc.latest_id) if pc else None
            if latest is None:
                plan.unknown_sender += 1
            plan.inserts.append(
                NewInbound(
                    event.wamid, latest, event.phone, None, kind, event.text, event.at, sender=to
                )
            )
            continue
        for row in active:
            seen = row.last_inbound_at
            if seen is None or event.at > seen:
                rows[row.id] = dataclasses.replace(row, last_inbound_at=event.at)
        active = [rows[r.id] for r in active]
        if opt_out:
            for row in active:
                rows[row.id] = dataclasses.replace(
                    row, state="opted_out", next_send_at=None, attempts=0
                )
                errors[row.id] = f"opted out: the user sent {event.text!r}"
                plan.opted_out += 1
            primary = active[0]
            plan.inserts.append(
                NewInbound(
                    event.wamid,
                    primary.id,
                    event.phone,
                    None,
                    kind,
                    event.text,
                    event.at,
                    sender=to,
                )
            )
            continue
        waiting = [r for r in active if _waits(r, flows, sent)]
        # The conversation the user is answering: the one quoted, else a waiting one,
        # the most recently moved.
        quoted = _quoted(active, event, replied)
        if quoted is not None:
            waiting = [quoted] if quoted in waiting else []
        primary = quoted or max(waiting or active, key=lambda r: (r.updated_at, r.id))
        step: int | None
        typed: dict[str, Any] = {}
        if waiting and (event.tap_id is not None or (event.text or "").strip()):
            step = primary.step
            try:
                t, typed = _answer(flows, primary, event, now)
            except InputError as exc:
                log.warning("webhook.reply_not_applied", conversation_id=primary.id, error=str(exc))
            else:
                if t is not None:
                    rows[primary.id] = dataclasses.replace(
                        primary,
                        state=t.state,
                        step=t.step,
                        purpose=t.purpose,
                        next_send_at=t.next_send_at,
                        attempts=0,
                    )
                    errors[primary.id] = t.note
                if typed.get("valid") is not False:
                    plan.advanced += 1
                else:
                    plan.invalid += 1
        elif waiting:
            step = primary.step  # a photo or sticker answering: kept, flow not moved
        elif primary.state == "in_progress" and primary.step > 0:
            step = primary.step - 1  # after a step that did not wait: keep it with that one
        else:
            step = None
        plan.inserts.append(
            NewInbound(
                event.wamid,
                primary.id,
                event.phone,
                step,
                kind,
                event.text,
                event.at,
                sender=to,
                **typed,
            )
        )
    for row_id, row in rows.items():
        if row != originals[row_id]:
            change = _change(row)
            plan.changes[row_id] = dataclasses.replace(change, last_error=errors.get(row_id))
    return plan
