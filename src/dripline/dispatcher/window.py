"""What to send for a due step given the 24-hour customer-service window. Pure.

WhatsApp delivers free-form messages only within 24 hours of the user's last message to
that business number; outside it only approved templates go through. The Cloud API
often *accepts* a free-form message outside the window and fails it later by status
webhook with 131047, so the choice has to be made before the send, not after the error.

The window is open at `now` when the user's last message (`conv.last_inbound_at`) is
less than `window_s - margin_s` old. The margin keeps a send that is due just before
the edge (and goes out a little later, after the rate limiter and the HTTP call) from
arriving after it: near the edge the step goes as its template.

Rules (`decide`), for the conversation's due purpose:

| due purpose | its message | window | result |
|---|---|---|---|
| fallback | (a template) | any | SEND fallback |
| question / reminder | a template | any | SEND it as is |
| question / reminder | text | open | SEND it as is |
| question | text | closed, step has a template (its own or the flow's) | SEND fallback |
| question | text | closed, no template | FAIL: the reason names the step and what to add |
| reminder | text | closed | SKIP: the reminder is not sent, the reply timeout runs on |
| reask<k> | text or buttons | closed | SKIP, like a reminder |

The margin also covers a text whose outcome is unknown (a lost answer): it is checked
again every `unknown_after_s` (60 s) up to `max_attempts` (8) times, about 8 minutes,
less than the default margin (10 min), so its retry is decided as the same text and
goes through the evidence rule (sent again only if proven never accepted). A retry held
back longer than the margin goes as the template, and the text may have arrived too.

A reminder outside the window is skipped rather than replaced by the step's template:
the step's one template slot (message key (conversation, step, 'fallback')) is the
question's, and the user already has the question. Give the reminder a `template` to
remind outside the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from dripline.flows.base import ConversationLike, Flow, OutboundMessage, TemplateMessage

__all__ = ["WINDOW_S", "Choice", "SendChoice", "decide", "window_open"]

# [SM] Meta, "Customer service windows": 24 hours from the user's last message.
WINDOW_S = 24 * 3600.0


class Choice(StrEnum):
    SEND = "send"  # send `message` under `purpose`
    SKIP = "skip"  # nothing to send (a text reminder outside the window)
    FAIL = "fail"  # the step cannot be delivered: the conversation fails with `reason`


@dataclass(frozen=True, slots=True)
class SendChoice:
    choice: Choice
    purpose: str
    message: OutboundMessage | None = None
    reason: str | None = None


def window_open(
    last_inbound_at: datetime | None, now: datetime, *, window_s: float, margin_s: float
) -> bool:
    """True when a free-form message sent at `now` arrives inside the window."""
    if last_inbound_at is None:
        return False
    return now - last_inbound_at < timedelta(seconds=max(window_s - margin_s, 0.0))


def decide(
    conv: ConversationLike,
    flow: Flow,
    now: datetime,
    *,
    window_s: float = WINDOW_S,
    margin_s: float = 0.0,
    step_label: str | None = None,
) -> SendChoice:
    """What to send for `conv.purpose` at `now` (see the module docstring).

    Raises FlowError when the flow cannot build the message (a placeholder without a
    value, a step that is gone), as `flow.message` does.
    """
    purpose = conv.purpose
    if purpose == "fallback":
        return SendChoice(Choice.SEND, purpose, flow.message(conv, purpose))
    message = flow.message(conv, purpose)
    if isinstance(message, TemplateMessage) or window_open(
        conv.last_inbound_at, now, window_s=window_s, margin_s=margin_s
    ):
        return SendChoice(Choice.SEND, purpose, message)
    since = (
        "the user has never written to this number"
        if conv.last_inbound_at is None
        else f"the user last wrote at {conv.last_inbound_at.isoformat(timespec='seconds')}"
    )
    if purpose != "question":
        # A reminder or a re-ask (`reask<k>`, which follows the user's own message, so
        # this only happens when it was held back a day).
        return SendChoice(
            Choice.SKIP,
            purpose,
            reason=f"{_what(purpose)} not sent: 24-hour window closed ({since}) and it is text",
        )
    if flow.has_fallback(conv):
        return SendChoice(Choice.SEND, "fallback", flow.message(conv, "fallback"))
    label = step_label or f"step {conv.step + 1}"
    return SendChoice(
        Choice.FAIL,
        purpose,
        reason=(
            f"24-hour customer service window closed ({since}) and {label} of flow "
            f"{flow.name!r} has no template: add a `fallback:` template to the step "
            "(or to the flow) in its flow file"
        ),
    )


def _what(purpose: str) -> str:
    return "re-ask" if purpose.startswith("reask") else purpose
