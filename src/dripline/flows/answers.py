"""A reply read as an answer to a step: an option id, a number, text, or invalid. Pure.

    interpret(step, reply) -> Answer(kind, option, number, text, valid)

- a reply button or list row tap (`reply_id`) or a template quick-reply tap
  (`payload`) that is one of the step's option ids -> that option;
- a typed reply to a choice or yes/no -> the option whose id or title it is (case,
  accents, spaces and final punctuation ignored), or whose number it is ("2" is the
  second option), or for yes/no a common synonym (English, Portuguese, Spanish);
- a typed reply to a number question -> the number, when it is one ("7", "7/10",
  "8,5") within min/max;
- a text question takes any non-empty text.

Anything else is invalid: the reply is kept, the step re-asks (see `flows.flow`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from dripline.flows.questions import question_options

__all__ = ["Answer", "Reply", "interpret", "normalize"]

# Typed yes/no: what people write instead of tapping (en, pt, es), after `normalize`.
_YES = frozenset(
    {
        "yes",
        "y",
        "yeah",
        "yep",
        "yup",
        "sure",
        "ok",
        "okay",
        "sim",
        "s",
        "claro",
        "si",
        "yes please",
        "of course",
        "👍",
    }
)
_NO = frozenset({"no", "n", "nope", "nah", "nao", "no thanks", "not yet", "👎"})
_NUMBER = re.compile(r"(-?\d+(?:[.,]\d+)?)(?:\s*(?:/|of|out of|de)\s*\d+)?")


@dataclass(frozen=True, slots=True)
class Reply:
    """What the user sent, as the inbox knows it: the text (typed words, or a tap's
    title) and a tap's id (`interactive.*_reply.id` or a quick-reply `button.payload`)."""

    text: str | None
    tap_id: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A typed answer. `kind` is option, number or text; `valid` False when the reply
    does not answer the question (then `option` and `number` are None)."""

    kind: str
    valid: bool
    option: str | None = None
    number: float | None = None
    text: str | None = None


def normalize(text: str) -> str:
    """Lowercase, accents stripped, inner spaces collapsed, end punctuation dropped."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(plain.split()).strip(" .!?¡¿,;:")


def _kind(step: Any) -> str:
    return {"choice": "option", "yes_no": "option", "number": "number"}.get(step.kind, "text")


def interpret(step: Any, reply: Reply) -> Answer:
    """`reply` read as an answer to `step` (a StepSpec); see the module docstring."""
    kind = _kind(step)
    text = reply.text
    if kind == "text":
        ok = bool(text and text.strip()) or reply.tap_id is not None
        return Answer("text", ok, text=text if text is not None else reply.tap_id)
    if kind == "option":
        option = _option(step, reply)
        return Answer("option", option is not None, option=option, text=text)
    number = _number(text) if reply.tap_id is None else _number(reply.tap_id)
    if number is None and reply.tap_id is not None:
        number = _number(text)
    low, high = step.min, step.max
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        return Answer("number", False, text=text)
    return Answer("number", True, number=number, text=text)


def _option(step: Any, reply: Reply) -> str | None:
    options = question_options(step)
    ids = [o.id for o in options]
    if reply.tap_id is not None and reply.tap_id in ids:
        return reply.tap_id
    if not reply.text:
        return None
    said = normalize(reply.text)
    if not said:
        return None
    for option in options:
        if said in (normalize(option.id), normalize(option.title)):
            return option.id
    if said.isdigit() and 1 <= int(said) <= len(options):
        return options[int(said) - 1].id
    if step.kind == "yes_no" and len(ids) == 2:
        # "yes, all done" / "não, ainda não": the first word decides.
        first = re.split(r"[\s,.;:!]+", said)[0]
        if said in _YES or first in _YES - {"s", "y"}:
            return ids[0]
        if said in _NO or first in _NO - {"n"}:
            return ids[1]
    return None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    match = _NUMBER.fullmatch(normalize(text))
    if match is None:
        return None
    return float(match.group(1).replace(",", "."))
