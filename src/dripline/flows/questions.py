"""What a step asks: its question kind, options, number range, re-asks and branches.

    kind: choice                  # text (default), choice, number, yes_no
    options:                      # choice: 1-10 options, each an id and a title
      - {id: starter, title: Starter}
      - {id: pro, title: Pro, description: "Everything in Starter, and more"}
    list_button: Choose           # choice as a list (4-10 options): its button label
    min: 0                        # number: the range a valid answer falls in
    max: 10
    reask: "Please pick one of the buttons."   # default: a sentence per kind
    max_reasks: 2                 # re-asks after invalid answers, then `on_invalid`
    on_invalid: wait              # continue, end or wait (keep waiting, no more re-asks)
    next: {pro: upsell, default: bye}   # or {"0-6": sorry, "9-10": review}, or a step id

How each kind goes out (`interactive.py` builds the payloads): `choice` with 3 or fewer
options as reply buttons, with 4-10 as a list message; `yes_no` as two reply buttons
(ids `yes` and `no`); `number` and `text` as text. Outside the 24-hour window a choice
goes as the step's template with one quick-reply button per option whose payload is the
option id.

Meta's limits, checked by `flows check` (`question_problems`). Sources: Meta's
interactive messages guide and the interactive object reference (Cloud API, "Send
messages" > "Interactive messages": reply buttons and list messages), as summarised in
/work/shared/reference/whatsapp-cloud-api.md section 8 and enforced by maintained SDKs
(pywa; whatsapp-api-js `ActionButtons`/`ActionList`; botonic's
WHATSAPP_MAX_BUTTON_LIST_CHARS = 24, ..._DESCRIPTION_CHARS = 72, ..._ID_CHARS = 200):
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BODY_MAX",
    "BUTTONS_MAX",
    "BUTTON_ID_MAX",
    "BUTTON_TITLE_MAX",
    "LIST_BUTTON_MAX",
    "LIST_ROWS_MAX",
    "ROW_DESCRIPTION_MAX",
    "ROW_ID_MAX",
    "ROW_TITLE_MAX",
    "SECTIONS_MAX",
    "SECTION_TITLE_MAX",
    "YES_NO",
    "NumberRange",
    "OptionSpec",
    "QuestionFields",
    "default_reask",
    "parse_range",
    "question_options",
    "question_problems",
    "uses_buttons",
]

BUTTONS_MAX = 3  # reply buttons: at most 3 per message
BUTTON_TITLE_MAX = 20  # reply button title: at most 20 characters
BUTTON_ID_MAX = 256  # reply button id: at most 256 characters, unique in the message
LIST_ROWS_MAX = 10  # list message: at most 10 rows across all sections
SECTIONS_MAX = 10  # list message: at most 10 sections
ROW_TITLE_MAX = 24  # list row title: at most 24 characters
ROW_DESCRIPTION_MAX = 72  # list row description: at most 72 characters
ROW_ID_MAX = 200  # list row id: at most 200 characters
LIST_BUTTON_MAX = 20  # list message's button label: at most 20 characters
SECTION_TITLE_MAX = 24  # list section title: at most 24 characters
BODY_MAX = 1024  # interactive body text: at most 1,024 characters
MAX_REASKS_LIMIT = 5  # re-ask purposes reask1..reask5 fit the 16-character purpose column

_OPTION_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_RANGE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:-\s*(-?\d+(?:\.\d+)?)\s*)?")

Kind = Literal["text", "choice", "number", "yes_no"]
NumberRange = tuple[float, float]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptionSpec(_Model):
    """One answer a choice offers: `id` is what is stored and branched on."""

    id: str
    title: str
    description: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> Any:
        # YAML reads `id: yes` as True and `id: 1` as 1: ids are the text written.
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and not _OPTION_ID.fullmatch(value):
            raise ValueError(f"option id {value!r} must be letters, digits, '_', '.' or '-'")
        return value

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("title is empty")
        return value


YES_NO = (OptionSpec(id="yes", title="Yes"), OptionSpec(id="no", title="No"))


def _next_key(value: Any) -> Any:
    # `next: {yes: a, no: b}`: YAML 1.1 reads the keys yes/no as booleans.
    if isinstance(value, dict):
        return {
            ("yes" if k else "no") if isinstance(k, bool) else str(k): v for k, v in value.items()
        }
    return value


class QuestionFields(_Model):
    """The step fields about its answer (see the module docstring)."""

    kind: Kind = "text"
    options: tuple[OptionSpec, ...] = ()
    list_button: str = "Choose"
    min: float | None = None
    max: float | None = None
    reask: str | None = None
    max_reasks: int = Field(default=2, ge=0, le=MAX_REASKS_LIMIT)
    on_invalid: Literal["continue", "end", "wait"] = "wait"
    next: str | dict[str, str] | None = None

    @field_validator("next", mode="before")
    @classmethod
    def _next(cls, value: Any) -> Any:
        return _next_key(value)


def question_options(step: QuestionFields) -> tuple[OptionSpec, ...]:
    """The options a step offers: its own, the fixed yes/no pair, or none."""
    if step.kind == "yes_no":
        return step.options or YES_NO
    return step.options if step.kind == "choice" else ()


def uses_buttons(step: QuestionFields) -> bool:
    """Reply buttons (3 or fewer options) rather than a list message."""
    return len(question_options(step)) <= BUTTONS_MAX


def default_reask(step: QuestionFields) -> str:
    """The re-ask when the step gives none: says what a valid answer is."""
    if step.kind == "number":
        low = _fmt(step.min) if step.min is not None else None
        high = _fmt(step.max) if step.max is not None else None
        if low is not None and high is not None:
            return f"Sorry, I need a number from {low} to {high}."
        return "Sorry, I need a number."
    if step.kind in ("choice", "yes_no"):
        titles = [o.title for o in question_options(step)]
        listed = ", ".join(f"{n}. {t}" for n, t in enumerate(titles, 1))
        how = "tap a button" if uses_buttons(step) else "pick one from the list"
        return f"Sorry, I did not get that. Please {how} or reply with one of: {listed}"
    return "Sorry, I did not get that. Could you answer again?"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def parse_range(key: str) -> NumberRange | None:
    """'0-6' -> (0, 6); '7' -> (7, 7); None when `key` is not a range."""
    match = _RANGE.fullmatch(key)
    if match is None:
        return None
    low = float(match.group(1))
    high = float(match.group(2)) if match.group(2) is not None else low
    return (low, high) if low <= high else None


Loc = tuple[str | int, ...]


def _length(problems: list[tuple[Loc, str]], where: Loc, value: str, limit: int, what: str) -> None:
    if len(value) > limit:
        problems.append((where, f"{what} is {len(value)} characters; WhatsApp allows {limit}"))


def question_problems(step: Any, here: Loc, has_text: bool) -> list[tuple[Loc, str]]:
    """Meta's limits and the kind's own rules for one step (`step` a StepSpec)."""
    problems: list[tuple[Loc, str]] = []
    kind = step.kind
    if kind != "text" and not step.wait_for_reply:
        problems.append(((*here, "kind"), f"a {kind} question needs wait_for_reply: true"))
    if kind not in ("choice", "yes_no") and step.options:
        problems.append(((*here, "options"), "options only apply to kind choice or yes_no"))
    if kind != "number" and (step.min is not None or step.max is not None):
        problems.append(
            ((*here, "min" if step.min is not None else "max"), "min/max only apply to kind number")
        )
    if kind == "number" and None not in (step.min, step.max) and step.min > step.max:
        problems.append(((*here, "min"), f"min ({_fmt(step.min)}) is above max ({_fmt(step.max)})"))
    options = question_options(step)
    if kind == "choice" and not options:
        problems.append(((*here, "options"), "a choice question needs options (1 to 10)"))
    if kind == "yes_no" and step.options and len(step.options) != 2:
        problems.append(((*here, "options"), "yes_no has exactly two options (yes and no)"))
    if len(options) > LIST_ROWS_MAX:
        problems.append(
            (
                (*here, "options"),
                f"{len(options)} options; a list message holds at most {LIST_ROWS_MAX} rows",
            )
        )
    buttons = len(options) <= BUTTONS_MAX
    seen: set[str] = set()
    for n, option in enumerate(options):
        at: Loc = (*here, "options", n)
        if option.id in seen:
            problems.append(((*at, "id"), f"option id {option.id!r} is used twice"))
        seen.add(option.id)
        if buttons:
            _length(problems, (*at, "title"), option.title, BUTTON_TITLE_MAX, "a button title")
            _length(problems, (*at, "id"), option.id, BUTTON_ID_MAX, "a button id")
            if option.description is not None:
                problems.append(
                    ((*at, "description"), "reply buttons have no description (4+ options: a list)")
                )
        else:
            _length(problems, (*at, "title"), option.title, ROW_TITLE_MAX, "a list row title")
            _length(problems, (*at, "id"), option.id, ROW_ID_MAX, "a list row id")
            if option.description is not None:
                _length(
                    problems,
                    (*at, "description"),
                    option.description,
                    ROW_DESCRIPTION_MAX,
                    "a list row description",
                )
    if options and not buttons:
        _length(
            problems,
            (*here, "list_button"),
            step.list_button,
            LIST_BUTTON_MAX,
            "the list button label",
        )
        if not step.list_button.strip():
            problems.append(((*here, "list_button"), "the list button label is empty"))
    if options and has_text and step.text is not None:
        _length(problems, (*here, "text"), step.text, BODY_MAX, "an interactive message's body")
    if step.reask is not None and not step.reask.strip():
        problems.append(((*here, "reask"), "reask is empty"))
    return problems
