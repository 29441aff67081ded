"""What the dispatcher and the webhook ask of a flow (the flows package implements it).

A flow decides *what* to send for a conversation's due action and *what happens next*;
the dispatcher decides *when* and *how* (rate, retries, leases).

Purposes (a conversation row's `purpose` is its next due action):

    question   send the step's message
    reminder   send the step's reminder (the user has not replied yet)
    fallback   send the step's template because the 24-hour window is closed
    timeout    nothing to send: call `on_timeout`, the user did not reply in time

Every method is pure: no I/O, no clock; the caller passes `now` / `sent_at`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dripline.flows.answers import Answer, Reply

__all__ = [
    "ChoiceRow",
    "ConversationLike",
    "Flow",
    "FlowRegistry",
    "InteractiveMessage",
    "OutboundMessage",
    "Question",
    "TemplateButton",
    "TemplateHeader",
    "TemplateMessage",
    "TextMessage",
    "Transition",
]


class ConversationLike(Protocol):
    """The conversation fields a flow reads.

    Satisfied by the store's `Conversation` (what a claim returns and what the webhook
    reads). Read-only properties, so frozen dataclasses fit.
    """

    @property
    def id(self) -> int: ...
    @property
    def phone(self) -> str: ...
    @property
    def flow(self) -> str: ...
    @property
    def step(self) -> int: ...
    @property
    def purpose(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def timezone(self) -> str | None: ...
    @property
    def fields(self) -> Mapping[str, Any] | None: ...
    @property
    def last_inbound_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class TextMessage:
    body: str


@dataclass(frozen=True, slots=True)
class TemplateHeader:
    """A template header's parameter: `kind` text (value is the text) or image, video,
    document (value is the media link); `parameter_name` for a named text parameter."""

    kind: str
    value: str
    parameter_name: str | None = None
    filename: str | None = None  # documents only


@dataclass(frozen=True, slots=True)
class TemplateButton:
    """A button parameter: `sub_type` quick_reply (value = payload) or url (value = the
    suffix appended to the template's URL), at the button's `index` (0-based)."""

    index: int
    sub_type: str
    value: str


@dataclass(frozen=True, slots=True)
class TemplateMessage:
    """An approved template and its parameter values.

    `body_params` fill {{1}}, {{2}}, ...; `named_body_params` ((name, value) pairs) fill a
    template created with named parameters ({{first_name}}). A template uses one or the
    other, never both.
    """

    name: str
    language: str
    body_params: tuple[str, ...] = ()
    named_body_params: tuple[tuple[str, str], ...] = ()
    header: TemplateHeader | None = None
    buttons: tuple[TemplateButton, ...] = ()


@dataclass(frozen=True, slots=True)
class ChoiceRow:
    """One option of an interactive message: a reply button or a list row."""

    id: str
    title: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class InteractiveMessage:
    """A choice question: reply buttons (`style` "button", 1-3 options) or a list
    message (`style` "list", up to 10 rows under one button labelled `list_button`).
    Only inside the 24-hour window, like text."""

    body: str
    options: tuple[ChoiceRow, ...]
    style: str  # "button" or "list"
    list_button: str = "Choose"


OutboundMessage = TextMessage | TemplateMessage | InteractiveMessage


@dataclass(frozen=True, slots=True)
class Transition:
    """The conversation's next state; `next_send_at` None when nothing more is due."""

    state: str
    step: int
    purpose: str
    next_send_at: datetime | None
    note: str | None = None  # stored as last_error when the flow ends unhappily


@dataclass(frozen=True, slots=True)
class Question:
    """One step as the answers export sees it: a column per step."""

    index: int  # the step's 0-based position (conversations.step, messages.step)
    id: str  # the column name: the step's `id`, default q1, q2, ...
    title: str  # the step's `title`, else the start of its text or its template name
    expects_reply: bool
    kind: str = "text"  # text, choice, number or yes_no (flows/questions.py)
    options: tuple[str, ...] = ()  # a choice's or yes_no's option ids, in order
    number_range: tuple[float, float] | None = None  # a number question's (min, max)


class Flow(Protocol):
    name: str

    def message(self, conv: ConversationLike, purpose: str) -> OutboundMessage:
        """The message for `purpose` ('question', 'reminder' or 'fallback') at conv.step.

        Raises FlowError when the step is gone or a placeholder has no value.
        """

    def after_send(self, conv: ConversationLike, purpose: str, sent_at: datetime) -> Transition:
        """Where the conversation goes once `purpose` was accepted by the API."""

    def on_timeout(self, conv: ConversationLike, now: datetime) -> Transition:
        """A due 'timeout' action: the user did not reply in time."""

    def on_reply(self, conv: ConversationLike, text: str, now: datetime) -> Transition:
        """An answer to conv.step arrived at `now`: the next step, or completed.

        The caller records the answer and handles opt-out keywords itself; it calls this
        only once the step's question (or fallback) went out. Raises FlowError for a
        conversation that is not active.
        """

    def answer(self, conv: ConversationLike, reply: Reply) -> Answer:
        """`reply` read as a typed answer to conv.step (valid or not)."""

    def on_answer(self, conv: ConversationLike, answer: Answer, now: datetime) -> Transition | None:
        """What a typed answer to conv.step does: its branch, a re-ask, the step's
        `on_invalid`, or None (nothing changes). Raises FlowError for a conversation
        that is not active."""

    def has_fallback(self, conv: ConversationLike) -> bool:
        """True when conv.step has a template for a closed 24-hour window."""

    def quiet_until(self, conv: ConversationLike, now: datetime) -> datetime | None:
        """When `now` falls in the step's quiet hours for the recipient, the time they end."""

    def questions(self) -> Sequence[Question]:
        """Every step in order, for the answers export (one column per question)."""

    @property
    def read_receipts(self) -> bool:
        """True when the inbox marks each answer to this flow as read (`read_receipts`)."""


class FlowRegistry(Protocol):
    def get(self, name: str) -> Flow:
        """The flow called `name`; raises FlowError when there is none."""

    def names(self) -> list[str]:
        """Every known flow name, sorted."""
