"""What the dispatcher and the webhook ask of a flow (the flows package implements it).

A flow decides *what* to send for a conversation's due action and *what happens next*;
the dispatcher decides *when* and *how* (rate, retries, leases).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from dripline.store.base import ClaimedConversation

__all__ = [
    "Flow",
    "FlowRegistry",
    "OutboundMessage",
    "TemplateMessage",
    "TextMessage",
    "Transition",
]


@dataclass(frozen=True, slots=True)
class TextMessage:
    body: str


@dataclass(frozen=True, slots=True)
class TemplateMessage:
    name: str
    language: str
    body_params: tuple[str, ...] = ()


OutboundMessage = TextMessage | TemplateMessage


@dataclass(frozen=True, slots=True)
class Transition:
    """The conversation's next state; `next_send_at` None when nothing more is due."""

    state: str
    step: int
    purpose: str
    next_send_at: datetime | None
    note: str | None = None  # stored as last_error when the flow ends unhappily


class Flow(Protocol):
    name: str

    def message(self, conv: ClaimedConversation, purpose: str) -> OutboundMessage:
        """The message for `purpose` ('question', 'reminder' or 'fallback') at conv.step.

        Raises FlowError when the step is gone or a placeholder has no value.
        """

    def after_send(self, conv: ClaimedConversation, purpose: str, sent_at: datetime) -> Transition:
        """Where the conversation goes once `purpose` was accepted by the API."""

    def on_timeout(self, conv: ClaimedConversation, now: datetime) -> Transition:
        """A due 'timeout' action: the user did not reply in time."""

    def has_fallback(self, conv: ClaimedConversation) -> bool:
        """True when conv.step has a template for a closed 24-hour window."""

    def quiet_until(self, conv: ClaimedConversation, now: datetime) -> datetime | None:
        """When `now` falls in the step's quiet hours for the recipient, the time they end."""


class FlowRegistry(Protocol):
    def get(self, name: str) -> Flow:
        """The flow called `name`; raises FlowError when there is none."""
