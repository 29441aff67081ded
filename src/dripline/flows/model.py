"""The flow file format, as pydantic models (unknown fields are errors).

    name: free-trial              # optional, default: the file name without .yaml
    description: ...
    quiet_hours: {start: "21:00", end: "08:00"}   # recipient's local time
    defaults: {name: there}       # placeholder values when the conversation has none
    fallback: {name: ..., language: en_US, body_params: ["{name}"]}   # all steps
    read_receipts: true           # mark each answer read (blue ticks); default false
    steps:
      - id: q1                    # optional, default q1, q2, ...: the export column
        title: ...                # optional, for people and the export
        text: "Hi {name}"         # or template: {name, language, body_params, ...}
        after: 10m                # delay after the previous step (default 0s)
        wait_for_reply: true
        reply_timeout: 1d         # required with wait_for_reply
        reminder: {after: 4h, text: "..."}   # or template
        kind: choice              # text (default), choice, number, yes_no: questions.py
        options: [{id: a, title: A}]   # min/max, reask, max_reasks, on_invalid, next
        on_timeout: end           # or continue
        fallback: {...}           # this step's template for a closed 24-hour window
        quiet_hours: off          # or {start, end}: overrides the flow's

A template's keys (header, buttons, named_params) are in `template_spec.py`; see
docs/flows.md for the meaning of each field.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from dripline.flows.branches import branch_problems
from dripline.flows.durations import format_duration, parse_duration
from dripline.flows.params import field_value_problems
from dripline.flows.placeholders import placeholders_in
from dripline.flows.questions import OptionSpec, QuestionFields, question_problems
from dripline.flows.template_spec import ButtonSpec, HeaderSpec, TemplateSpec

__all__ = [
    "ButtonSpec",
    "FlowSpec",
    "HeaderSpec",
    "Loc",
    "MessageSpec",
    "OptionSpec",
    "QuietHours",
    "ReminderSpec",
    "StepSpec",
    "TemplateSpec",
    "semantic_problems",
]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
_STEP_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_TEXT_LIMIT = 4096  # Cloud API: a text message body holds at most 4096 characters


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


# Serialized back as flow files write them (`1h30m`), not ISO 8601 (`PT1H30M`).
Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, when_used="json")
]


def _check_text(value: str) -> str:
    if not value.strip():
        raise ValueError("text is empty")
    if len(value) > _TEXT_LIMIT:
        raise ValueError(f"text is {len(value)} characters; WhatsApp allows {_TEXT_LIMIT}")
    placeholders_in(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MessageSpec(_Model):
    """Text or a template: exactly one."""

    text: str | None = None
    template: TemplateSpec | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else _check_text(value)

    @model_validator(mode="after")
    def _one_message(self) -> MessageSpec:
        if (self.text is None) == (self.template is None):
            raise ValueError(
                "give exactly one message: `text` or `template`"
                if self.text is not None
                else "a message is missing: give `text` or `template`"
            )
        return self

    def describe(self) -> str:
        """A short human label: the text's start or `template <name>`."""
        if self.template is not None:
            return f"template {self.template.name}"
        text = " ".join((self.text or "").split())
        return text if len(text) <= 60 else text[:57] + "..."


class ReminderSpec(MessageSpec):
    """A nudge sent `after` the question when no reply came."""

    after: Duration

    @field_validator("after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("a reminder needs a delay above 0s")
        return value


def _parse_clock(value: Any) -> time:
    if isinstance(value, time):
        return value
    match = _CLOCK.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'invalid time {value!r} (use 24-hour HH:MM in quotes, e.g. "21:00")')
    return time(int(match.group(1)), int(match.group(2)))


Clock = Annotated[
    time,
    BeforeValidator(_parse_clock),
    PlainSerializer(lambda value: value.strftime("%H:%M"), when_used="json"),
]


class QuietHours(_Model):
    """A daily window in the recipient's local time when nothing is sent.

    `start` > `end` crosses midnight; `start` == `end` means no quiet hours.
    """

    start: Clock
    end: Clock

    @classmethod
    def off(cls) -> QuietHours:
        """No quiet hours (a step that overrides the flow's)."""
        return cls(start=time(0), end=time(0))

    @property
    def is_off(self) -> bool:
        return self.start == self.end


def _quiet_hours(value: Any) -> Any:
    # `quiet_hours: off` (YAML reads off/false/no as False) switches them off for a step.
    return QuietHours.off() if value is False else value


QuietHoursField = Annotated[QuietHours | None, BeforeValidator(_quiet_hours)]


class StepSpec(QuestionFields, MessageSpec):
    """One question: its message, its timing, what a closed window or silence does, and
    what it asks (`QuestionFields`: kind, options, re-asks, branches)."""

    id: str | None = None
    title: str | None = None
    after: Duration = timedelta(0)
    wait_for_reply: bool = False
    reply_timeout: Duration | None = None
    reminder: ReminderSpec | None = None
    on_timeout: Literal["end", "continue"] = "end"
    fallback: TemplateSpec | None = None
    quiet_hours: QuietHoursField = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not _STEP_ID.fullmatch(value):
            raise ValueError(f"id {value!r} must be letters, digits, '_' or '-'")
        return value


class FlowSpec(_Model):
    """A whole flow file."""

    name: str
    description: str | None = None
    overrides_builtin: bool = False
    quiet_hours: QuietHoursField = None
    defaults: dict[str, str] = Field(default_factory=dict)
    fallback: TemplateSpec | None = None
    # Mark each answer as read through the Cloud API (the user sees blue ticks).
    read_receipts: bool = False
    # The business phone number id this flow sends from (a configured one, checked at
    # enrollment: dripline.senders); an enrollment's own `sender` wins. None: the default.
    sender: str | None = Field(None, pattern=r"^[0-9]{1,32}$")
    steps: list[StepSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"flow name {value!r} must be lowercase letters, digits, '-' or '_' (at most 100)"
            )
        return value

    @field_validator("sender", mode="before")
    @classmethod
    def _sender_digits(cls, value: object) -> object:
        """YAML reads `sender: 1234` as a number: a phone number id is its digits."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Loc = tuple[str | int, ...]


def _step_templates(step: StepSpec) -> list[TemplateSpec | None]:
    reminder = step.reminder.template if step.reminder is not None else None
    return [step.template, reminder, step.fallback]


def semantic_problems(spec: FlowSpec) -> list[tuple[Loc, str]]:
    """Rules across fields, each with the location of the field to fix."""
    problems: list[tuple[Loc, str]] = []
    # Enrollment decides when step 0 goes (its `at`); a delay here would be ignored.
    if spec.steps[0].after != timedelta(0):
        problems.append(
            (
                ("steps", 0, "after"),
                "the first step is sent at enrollment; delay it with the enrollment's `at`",
            )
        )
    templates = [spec.fallback, *(t for s in spec.steps for t in _step_templates(s))]
    texts = [p for t in templates if t is not None for p in t.text_params()]
    for key, why in field_value_problems(texts, spec.defaults):
        problems.append((("defaults", key), f"the default {why}"))
    seen: dict[str, int] = {}
    for index, step in enumerate(spec.steps):
        here: Loc = ("steps", index)
        step_id = step.id or f"q{index + 1}"
        if step_id in seen:
            where = (*here, "id") if step.id else here
            problems.append((where, f"id {step_id!r} is already used by steps[{seen[step_id]}]"))
        seen.setdefault(step_id, index)
        if step.wait_for_reply:
            if step.reply_timeout is None:
                problems.append(
                    ((*here, "wait_for_reply"), "wait_for_reply needs a reply_timeout (e.g. 1d)")
                )
            elif step.reply_timeout <= timedelta(0):
                problems.append(((*here, "reply_timeout"), "reply_timeout must be above 0s"))
            elif step.reminder is not None and step.reminder.after >= step.reply_timeout:
                problems.append(
                    (
                        (*here, "reminder", "after"),
                        f"the reminder ({format_duration(step.reminder.after)}) must come "
                        f"before reply_timeout ({format_duration(step.reply_timeout)})",
                    )
                )
        else:
            for field in ("reply_timeout", "reminder", "on_timeout", "on_invalid", "reask"):
                if field in step.model_fields_set:
                    problems.append(
                        ((*here, field), f"{field} only applies with wait_for_reply: true")
                    )
        problems += question_problems(step, here, step.text is not None)
    problems += branch_problems(spec.steps)
    return problems
