"""Validate a `POST /messages` body as the Cloud API does: code 100 for bad input."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dripline.fake.interactive import Choice, Refused, check_interactive
from dripline.fake.templates import TemplateParams, template_params

__all__ = ["Parsed", "Problem", "check_message", "digits"]

_PHONE = re.compile(r"^\+?[0-9 ()\-.]{5,24}$")
_OTHER_TYPES = frozenset(
    {
        "audio",
        "contacts",
        "document",
        "image",
        "interactive",
        "location",
        "reaction",
        "sticker",
        "video",
    }
)
_MAX_TEXT_CHARS = 4096  # Messages API: "A text message can be a max of 4096 characters"


@dataclass(frozen=True, slots=True)
class Problem:
    """A request the real API would refuse: Meta's code and a `details` text."""

    code: int
    details: str


@dataclass(frozen=True, slots=True)
class Parsed:
    to: str  # digits only
    to_input: str  # as sent (the send response's `contacts[0].input`)
    type: str
    body: str  # text body or template name
    callback_data: str | None
    language: str | None = None  # a template's language code
    params: TemplateParams = field(default_factory=TemplateParams)
    # What the user can tap: reply buttons, list rows, a template's quick-reply payloads.
    choices: tuple[Choice, ...] = ()


def digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


def _template(data: dict[str, Any], to: str, callback: str | None) -> Parsed | Problem:
    template = data.get("template")
    if not isinstance(template, dict):
        return Problem(100, "The parameter template is required")
    name = template.get("name")
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(name, str) or not name:
        return Problem(100, "The parameter template['name'] is required")
    if not isinstance(code, str) or not code:
        return Problem(100, "The parameter template['language']['code'] is required")
    params = template_params(template)
    if isinstance(params, str):
        return Problem(100, params)
    return Parsed(
        digits(to), to, "template", name, callback, code, params, _quick_replies(template)
    )


def _quick_replies(template: dict[str, Any]) -> tuple[Choice, ...]:
    """A template's quick-reply payloads, in button order (the tap sends the payload)."""
    out = []
    for component in template.get("components", []):
        if component.get("type") == "button" and component.get("sub_type") == "quick_reply":
            for param in component.get("parameters", []):
                payload = param.get("payload") if isinstance(param, dict) else None
                if isinstance(payload, str):
                    out.append(Choice(payload, payload))
    return tuple(out)


def check_message(data: Any) -> Parsed | Problem:
    """Validate a `/messages` body like the Cloud API does (code 100 for bad input)."""
    if not isinstance(data, dict):
        return Problem(100, "The request body must be a JSON object")
    if data.get("messaging_product") != "whatsapp":
        return Problem(100, "The parameter messaging_product is required and must be whatsapp")
    to = data.get("to")
    if not isinstance(to, str) or not _PHONE.match(to) or not 5 <= len(digits(to)) <= 15:
        return Problem(100, "Invalid parameter: to must be a phone number")
    kind = data.get("type", "text")
    callback = data.get("biz_opaque_callback_data")
    if callback is not None and (not isinstance(callback, str) or len(callback) > 512):
        return Problem(100, "biz_opaque_callback_data must be a string of at most 512 chars")
    if kind == "text":
        text = data.get("text")
        body = text.get("body") if isinstance(text, dict) else None
        if not isinstance(body, str) or not body.strip():
            return Problem(100, "The parameter text['body'] is required")
        if len(body) > _MAX_TEXT_CHARS:
            return Problem(100, f"text['body'] is longer than {_MAX_TEXT_CHARS} characters")
        return Parsed(digits(to), to, "text", body, callback)
    if kind == "template":
        return _template(data, to, callback)
    if kind == "interactive" and isinstance(data.get(kind), dict):
        try:
            body, choices = check_interactive(data[kind])
        except Refused as refused:
            return Problem(refused.code, refused.details)
        return Parsed(digits(to), to, kind, body or kind, callback, choices=choices)
    if isinstance(kind, str) and kind in _OTHER_TYPES:
        if not isinstance(data.get(kind), dict):
            return Problem(100, f"The parameter {kind} is required")
        return Parsed(digits(to), to, kind, kind, callback)
    return Problem(100, "Invalid parameter: type")
