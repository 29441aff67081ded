"""What a message the API accepted and later failed (a `failed` status webhook) does to
its conversation. Pure: the processor passes the refusals, the flows and `now`.

Meta reports errors "synchronously, asynchronously via webhook, or sometimes both". A
`failed` status goes through the same reaction table as a failed send
(`dispatcher.reactions.react`, by the class of `errors[0].code`), and then:

- FALLBACK (window, 131047, and the step has a template), for a question: the
  conversation goes back to step s with `fallback` due now.
- FAIL (permanent: 131026, 131050, 130472, 131051, 132xxx, ...; the window without a
  template; a template refused), for any message: `failed`, with the code and reason.
- RETRY / THROTTLE / TRIP (transient, 131049, 131000, 131016, unknown codes, ...), for a
  question or fallback: the same message (its row back to `pending`) due after a
  backoff; `failed` once the message was tried `max_attempts` times.
- SKIP (the window) or any retry, for a reminder: nothing; the user has the question
  and the reply timeout runs on.

The conversation may have moved on since the send was accepted. The rule:

- `failed`, `opted_out` and `cancelled` conversations never change (the message row
  keeps the error for the record).
- A step can be *rewound to* when the conversation is at that step, or past it with only
  steps that wait for no reply in between (`completed` included: a last step that waits
  for nothing completes as soon as it is accepted). Rewinding loses nothing the user
  did: the steps after it were already sent and are not sent again (their rows exist;
  the dispatcher finds them accepted and moves on).
- A fallback or retry that cannot rewind (the user answered a later step) fails the
  conversation with a reason saying the step was refused after the flow moved on:
  never `completed` while one of its questions was refused, never waiting for a reply
  to a message that did not arrive.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dripline.dispatcher.reactions import Action, Failure, react
from dripline.errors import InputError
from dripline.flows import FlowRegistry
from dripline.settings import Delivery
from dripline.store import Conversation, ConversationChange, Refusal
from dripline.whatsapp.errors import classify

__all__ = ["RefusalPlan", "plan_refusals"]

# States a refusal never changes: ended by someone's decision or by an earlier failure.
_FINAL = ("failed", "opted_out", "cancelled")


@dataclass(slots=True)
class RefusalPlan:
    changes: dict[int, ConversationChange] = field(default_factory=dict)
    requeue: list[int] = field(default_factory=list)  # message ids to make pending again
    failed: int = 0
    fallbacks: int = 0
    retries: int = 0


def _label(flows: FlowRegistry, conv: Conversation, step: int) -> str:
    try:
        questions = flows.get(conv.flow).questions()
    except InputError:
        return f"step {step + 1}"
    if 0 <= step < len(questions):
        return f"step {step + 1} ({questions[step].id})"
    return f"step {step + 1}"


def _rewindable(flows: FlowRegistry, conv: Conversation, step: int) -> bool:
    """True when moving `conv` back to `step` undoes no answer (see the module rule)."""
    if conv.state in _FINAL or conv.step < step:
        return False
    if conv.step == step:
        return True
    try:
        questions = flows.get(conv.flow).questions()
    except InputError:
        return False
    between = questions[step : conv.step]
    return len(between) == conv.step - step and not any(q.expects_reply for q in between)


def _has_fallback(flows: FlowRegistry, conv: Conversation, step: int) -> bool:
    try:
        return flows.get(conv.flow).has_fallback(dataclasses.replace(conv, step=step))
    except InputError:
        return False


def plan_refusals(
    refusals: Sequence[Refusal],
    flows: FlowRegistry,
    now: datetime,
    *,
    max_attempts: int,
    retry_base_s: float,
    retry_cap_s: float,
) -> RefusalPlan:
    """Decide what each refusal (none busy) does to its conversation, in message order."""
    plan = RefusalPlan()
    rows: dict[int, Conversation] = {}
    for r in sorted(refusals, key=lambda r: r.message_id):
        conv = rows.get(r.conversation.id, r.conversation)
        if conv.state in _FINAL:
            continue
        code = r.error_code
        failure = Failure(str(classify(code, None)), code, r.error_title or "failed")
        reaction = react(
            failure,
            attempts=max(r.attempts - 1, 0),
            max_attempts=max_attempts,
            delivery=Delivery.AT_MOST_ONCE,
            purpose=r.purpose,
            has_fallback=_has_fallback(flows, conv, r.step),
            retry_base_s=retry_base_s,
            retry_cap_s=retry_cap_s,
            rng=random.Random(r.message_id),  # deterministic: pure
        )
        action = reaction.action
        what = f"{_label(flows, conv, r.step)} {r.purpose}"
        why = f"{what} was accepted, then refused by status webhook: {reaction.reason}"
        if action in (Action.RETRY, Action.THROTTLE, Action.TRIP, Action.UNKNOWN):
            if r.purpose == "reminder":
                continue
            if r.attempts >= max_attempts:
                action = Action.FAIL
                why = f"{why} (gave up after {r.attempts} attempts)"
        elif action is Action.SKIP:
            continue
        if action is not Action.FAIL and not _rewindable(flows, conv, r.step):
            action = Action.FAIL
            why = f"{why}; the conversation had moved on to step {conv.step + 1}"
        if action is not Action.FAIL and r.superseded:
            # Retrying or falling back would make this ended conversation active next to
            # the user's newer one in the same flow (one active per phone and flow): the
            # refused step is recorded as this one's failure instead (simulator seed 197).
            action = Action.FAIL
            why = f"{why}; a newer enrollment in the same flow is active"
        if action is Action.FAIL:
            new = dataclasses.replace(conv, state="failed", next_send_at=None, last_error=why)
            plan.failed += 1
        elif action is Action.FALLBACK:
            new = dataclasses.replace(
                conv,
                state="in_progress",
                step=r.step,
                purpose="fallback",
                next_send_at=now,
                attempts=0,
                last_error=f"{why}; sending the step's template",
            )
            plan.fallbacks += 1
        else:
            delay = max(reaction.delay_s, retry_base_s)
            new = dataclasses.replace(
                conv,
                state="in_progress",
                step=r.step,
                purpose=r.purpose,
                next_send_at=now + timedelta(seconds=delay),
                last_error=f"{why}; retrying",
            )
            plan.requeue.append(r.message_id)
            plan.retries += 1
        rows[conv.id] = new
    for conv_id, row in rows.items():
        plan.changes[conv_id] = ConversationChange(
            id=row.id,
            state=row.state,
            step=row.step,
            purpose=row.purpose,
            next_send_at=row.next_send_at,
            attempts=row.attempts,
            last_error=row.last_error,
            last_inbound_at=row.last_inbound_at,
        )
    return plan
