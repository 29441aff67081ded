"""Moving in from another scheduler's table: one source row -> one conversation, placed at
the right step of a dripline flow. Pure: rows in, decisions out; `cli/import_pg.py` reads
the rows and writes the result.

The source query returns these columns (rename with `AS`); the rest become template
fields, like a CSV import's extra columns:

    phone          required; E.164 or a number `normalize_phone` accepts
    step           required; the flow step the conversation is at: its 0-based index or
                   its `id`. With `next_send_at`: the step to send then. Without: the
                   step whose question was sent and waits for its answer.
    next_send_at   when that step's question is due (the seed's
                   `nextQuestionScheduledFor`); NULL: the step's question went out and
                   waits for a reply
    state          optional; dripline's states. Active ones (pending, in_progress,
                   awaiting_reply) are imported; final ones (completed, failed,
                   opted_out, cancelled) are skipped and counted; anything else is an
                   error, so map the old values in the query (`CASE ... END AS state`)
    asked_at       optional; when the waiting question was sent (default: the import
                   time). The flow decides from it when the reminder or the reply
                   timeout is due, as if dripline had sent it.
    name, timezone optional, as for `dripline enroll`
    key            optional; the old row's id, shown in errors and the dry run

Timestamps without a time zone are UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dripline.errors import InputError
from dripline.flows.base import Flow
from dripline.phones import normalize_phone
from dripline.store.report_types import ImportedConversation as Imported
from dripline.store.types import ACTIVE_STATES, CONVERSATION_STATES, Conversation

__all__ = ["KNOWN_COLUMNS", "Planned", "Skipped", "check_columns", "plan_row"]

KNOWN_COLUMNS = ("key", "phone", "step", "next_send_at", "state", "asked_at", "name", "timezone")
REQUIRED_COLUMNS = ("phone", "step")


@dataclass(frozen=True, slots=True)
class Planned:
    key: str
    item: Imported
    step_id: str  # the step's id (q1, goal, ...), for the dry run


@dataclass(frozen=True, slots=True)
class Skipped:
    key: str
    reason: str


def check_columns(columns: list[str]) -> None:
    """Refuse a query whose result lacks a required column (naming what it returned)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(
            f"the query returns no {', '.join(missing)} column (it returns: "
            f"{', '.join(columns) or 'nothing'}); rename with AS, e.g. "
            '"phoneNumber" AS phone',
            where="--query",
        )


def _timestamp(value: Any, column: str, where: str) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InputError(f"{column} {value!r} is not a timestamp", where=where) from None
    if not isinstance(value, datetime):
        raise InputError(f"{column} {value!r} is not a timestamp", where=where)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _step(value: Any, flow: Flow, where: str) -> int:
    questions = flow.questions()
    ids = {q.id: q.index for q in questions}
    if isinstance(value, str) and value.strip() in ids:
        return ids[value.strip()]
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(
            f"step {value!r} is neither a step index nor a step id of flow {flow.name} "
            f"({', '.join(ids)})",
            where=where,
        )
    if not 0 <= value < len(questions):
        raise InputError(
            f"step {value} is outside flow {flow.name}'s steps 0 to {len(questions) - 1} "
            "(0-based: the first question is step 0)",
            where=where,
        )
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def plan_row(
    row: Mapping[str, Any], flow: Flow, now: datetime, *, number: int
) -> Planned | Skipped:
    """Where the source row `number` (1-based) goes in `flow`, or why it is skipped.

    Raises InputError naming the row (and its key) and the column for a row that
    cannot be placed."""
    key = _text(row.get("key")) or f"#{number}"
    where = f"row {number} (key {key})" if row.get("key") is not None else f"row {number}"
    state = _text(row.get("state"))
    if state is not None and state not in CONVERSATION_STATES:
        raise InputError(
            f"state {state!r} is not a dripline state ({', '.join(CONVERSATION_STATES)}); "
            "map the old values in the query: CASE ... END AS state",
            where=where,
        )
    if state is not None and state not in ACTIVE_STATES:
        return Skipped(key, f"state {state}")
    phone = normalize_phone(_text(row.get("phone")) or "", where=where)
    step = _step(row.get("step"), flow, where)
    due = _timestamp(row.get("next_send_at"), "next_send_at", where)
    asked = _timestamp(row.get("asked_at"), "asked_at", where) or now
    tz = _text(row.get("timezone"))
    fields = {
        k: text for k, v in row.items() if k not in KNOWN_COLUMNS and (text := _text(v)) is not None
    }
    base = Imported(
        phone=phone,
        flow=flow.name,
        step=step,
        purpose="question",
        state="in_progress",
        next_send_at=due or now,
        name=_text(row.get("name")),
        timezone=_zone(tz, where) if tz else None,
        fields=fields,
    )
    step_id = flow.questions()[step].id
    if due is not None and state == "awaiting_reply":
        # A deadline for the answer: the reply timeout at that time.
        item = replace(base, state="awaiting_reply", purpose="timeout")
    elif due is not None:
        # Nothing sent yet is `pending`; step 0 due later has not started.
        item = replace(base, state="pending" if step == 0 else "in_progress")
    else:
        # The question went out at `asked_at`: the flow says what comes next, as if
        # dripline had sent it (a reminder, the reply timeout, or the next step).
        conv = Conversation(
            0, phone, flow.name, step, "question", "in_progress", None, 0, None, None,
            None, None, base.name, base.timezone, None, fields, now, now,
        )  # fmt: skip
        after = flow.after_send(conv, "question", asked)
        if after.state not in ACTIVE_STATES or after.next_send_at is None:
            return Skipped(key, f"step {step} ({step_id}) was the last and waits for nothing")
        item = replace(
            base,
            step=after.step,
            state=after.state,
            purpose=after.purpose,
            next_send_at=after.next_send_at,
        )
        step_id = flow.questions()[after.step].id
    return Planned(key, item, step_id)


def _zone(raw: str, where: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"timezone {raw!r} is not an IANA time zone (e.g. Europe/Paris)", where=where
        ) from None
    return raw
