"""Validate an `interactive` send (reply buttons, list message) as the Cloud API does.

Meta's error codes page: 131008 "Required parameter is missing" (a body without text,
buttons without a title) and 131009 "Parameter value is not valid" (one or more
parameter values are invalid: too many buttons, a title too long, duplicate ids). The
limits are the same ones `flows check` enforces (dripline.flows.questions, which cites
the interactive messages guide): buttons 1-3, title <= 20, id <= 256 and unique; list
rows 1-10 in all, up to 10 sections (a title each when there are several, <= 24), row
title <= 24, description <= 72, id <= 200 and unique; the list's button label <= 20;
body text <= 1,024. Other interactive types (cta_url, flow, product...) pass unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dripline.flows.questions import (
    BODY_MAX,
    BUTTON_ID_MAX,
    BUTTON_TITLE_MAX,
    BUTTONS_MAX,
    LIST_BUTTON_MAX,
    LIST_ROWS_MAX,
    ROW_DESCRIPTION_MAX,
    ROW_ID_MAX,
    ROW_TITLE_MAX,
    SECTION_TITLE_MAX,
    SECTIONS_MAX,
)

__all__ = ["Choice", "Refused", "check_interactive"]

MISSING = 131008
INVALID = 131009


@dataclass(frozen=True, slots=True)
class Choice:
    """An option the user can tap: what their reply carries."""

    id: str
    title: str
    description: str | None = None


class Refused(Exception):
    """The API's refusal: its code and `error_data.details`."""

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _length(value: str, limit: int, what: str) -> None:
    if len(value) > limit:
        raise Refused(INVALID, f"{what} length invalid. Min length: 1, Max length: {limit}")


def _required(value: Any, what: str) -> str:
    text = _text(value)
    if text is None:
        raise Refused(MISSING, f"The parameter {what} is required")
    return text


def check_interactive(obj: dict[str, Any]) -> tuple[str, tuple[Choice, ...]]:
    """(body, choices) for a valid message; raises Refused as the API would."""
    kind = obj.get("type")
    if kind not in ("button", "list"):
        return "", ()  # another interactive type: not modelled, accepted as is
    body_obj = obj.get("body")
    body = _required(
        body_obj.get("text") if isinstance(body_obj, dict) else None,
        "interactive['body']['text']",
    )
    _length(body, BODY_MAX, "Body text")
    action = obj.get("action")
    if not isinstance(action, dict):
        raise Refused(MISSING, "The parameter interactive['action'] is required")
    choices = _buttons(action) if kind == "button" else _list(action)
    if len({c.id for c in choices}) != len(choices):
        raise Refused(INVALID, "Buttons or rows must have unique ids")
    return body, choices


def _buttons(action: dict[str, Any]) -> tuple[Choice, ...]:
    buttons = action.get("buttons")
    if not isinstance(buttons, list) or not buttons:
        raise Refused(MISSING, "The parameter interactive['action']['buttons'] is required")
    if len(buttons) > BUTTONS_MAX:
        raise Refused(
            INVALID, f"Invalid buttons count. Min allowed buttons: 1, Max allowed: {BUTTONS_MAX}"
        )
    out = []
    for button in buttons:
        reply = button.get("reply") if isinstance(button, dict) else None
        if not isinstance(reply, dict) or button.get("type") != "reply":
            raise Refused(INVALID, "Each button must be {type: reply, reply: {id, title}}")
        rid = _required(reply.get("id"), "button['reply']['id']")
        title = _required(reply.get("title"), "button['reply']['title']")
        _length(title, BUTTON_TITLE_MAX, "Button title")
        _length(rid, BUTTON_ID_MAX, "Button id")
        out.append(Choice(rid, title))
    return tuple(out)


def _list(action: dict[str, Any]) -> tuple[Choice, ...]:
    label = _required(action.get("button"), "interactive['action']['button']")
    _length(label, LIST_BUTTON_MAX, "Button label")
    sections = action.get("sections")
    if not isinstance(sections, list) or not sections:
        raise Refused(MISSING, "The parameter interactive['action']['sections'] is required")
    if len(sections) > SECTIONS_MAX:
        raise Refused(INVALID, f"Too many sections. Max allowed: {SECTIONS_MAX}")
    out = []
    for section in sections:
        if not isinstance(section, dict):
            raise Refused(INVALID, "Each section must be an object with rows")
        title = section.get("title")
        if len(sections) > 1:
            _required(title, "section['title'] (several sections)")
        if isinstance(title, str):
            _length(title, SECTION_TITLE_MAX, "Section title")
        rows = section.get("rows")
        if not isinstance(rows, list) or not rows:
            raise Refused(MISSING, "The parameter section['rows'] is required")
        for row in rows:
            if not isinstance(row, dict):
                raise Refused(INVALID, "Each row must be an object {id, title, description}")
            rid = _required(row.get("id"), "row['id']")
            rtitle = _required(row.get("title"), "row['title']")
            desc = row.get("description")
            _length(rtitle, ROW_TITLE_MAX, "Row title")
            _length(rid, ROW_ID_MAX, "Row id")
            if isinstance(desc, str):
                _length(desc, ROW_DESCRIPTION_MAX, "Row description")
            out.append(Choice(rid, rtitle, desc if isinstance(desc, str) else None))
    if len(out) > LIST_ROWS_MAX:
        raise Refused(INVALID, f"Too many rows. Max allowed rows: {LIST_ROWS_MAX}")
    return tuple(out)
