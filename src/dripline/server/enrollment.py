"""Enrollment requests as the API takes them, and every check before one is stored.

A rejected item is one `InputError` naming the field (and, for a list, its index), so
the API answers a 4xx and stores nothing: a list is validated whole before the single
enrollment transaction.
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from dripline.errors import InputError
from dripline.flows import FlowRegistry, YamlFlow
from dripline.flows.enrollment import check_template_values
from dripline.flows.model import MessageSpec, TemplateSpec
from dripline.flows.placeholders import placeholders_in
from dripline.phones import normalize_phone
from dripline.senders import flow_sender, resolve_sender
from dripline.store import Enrollment
from dripline.text import unstorable_reason

__all__ = ["MAX_BATCH", "EnrollRequest", "parse_enrollments", "required_fields"]

MAX_BATCH = 1_000  # conversations per POST: one transaction, answered in well under a second


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL, no encoder a lone surrogate (a later read, page or
    # send would fail on it); refusing them here keeps it a 422, not a 5xx.
    reason = unstorable_reason(value) if value is not None else None
    if reason is not None:
        raise ValueError(reason)
    return value


class EnrollRequest(BaseModel):
    """One conversation to start."""

    model_config = ConfigDict(extra="forbid")

    phone: str = Field(
        min_length=1, max_length=32, description="E.164, '+' optional", examples=["+14155550123"]
    )
    flow: str = Field(min_length=1, max_length=100, examples=["free-trial"])
    name: str | None = Field(None, max_length=200, description="fills {name}")
    timezone: str | None = Field(
        None, max_length=64, description="IANA zone for quiet hours; default from the phone"
    )
    at: AwareDatetime | None = Field(
        None, description="when the first step is due (with a UTC offset); default now"
    )
    fields: dict[str, str] = Field(
        default_factory=dict, max_length=50, description="placeholder values"
    )
    sender: str | None = Field(
        None,
        max_length=32,
        description="the business phone number id to send from (a configured one); "
        "default: the flow's `sender`, else the default number",
    )
    opt_in: bool = Field(
        False,
        description="the person opted in again: lifts an earlier opt-out (STOP, 131050) "
        "of this number instead of refusing it with 409",
    )

    @field_validator("phone", "flow", "name", "timezone", "sender")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return _no_nul(value)

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not key.isidentifier() or len(key) > 64:
                raise ValueError(f"field name {key[:64]!r} must be an identifier like first_name")
            if len(item) > 1024:
                raise ValueError(f"field {key} is longer than 1024 characters")
            _no_nul(item)
        return value

    @field_validator("at")
    @classmethod
    def _at(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if not 2000 <= value.year <= 2999:
            raise ValueError("must be between the years 2000 and 2999")
        return value.astimezone(UTC)


def _message_placeholders(spec: MessageSpec | TemplateSpec | None) -> set[str]:
    names: set[str] = set()
    if spec is None:
        return names
    if isinstance(spec, TemplateSpec):
        for param in spec.all_params():  # body, named, header and button parameters
            names.update(placeholders_in(param))
        return names
    if spec.text is not None:
        names.update(placeholders_in(spec.text))
    names.update(_message_placeholders(spec.template))
    return names


def required_fields(flow: YamlFlow) -> set[str]:
    """Placeholders a conversation must supply: every message's, less the flow's
    non-blank defaults and `phone` (always known)."""
    spec = flow.spec
    names: set[str] = set()
    for step in spec.steps:
        names |= _message_placeholders(step)
        names |= _message_placeholders(step.reminder)
        names |= _message_placeholders(step.fallback or spec.fallback)
    defaults = {k for k, v in spec.defaults.items() if v.strip()}
    return names - defaults - {"phone"}


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def _check(
    item: EnrollRequest, flows: FlowRegistry, where: str, senders: Sequence[str]
) -> Enrollment:
    """Semantic checks on a shape-valid item; InputError naming the field otherwise.
    `senders`: the configured phone number ids, the default first (none: any)."""
    phone = normalize_phone(item.phone, where=f"{where}phone")
    try:
        flow = flows.get(item.flow)
    except InputError as exc:
        raise InputError(str(exc), where=f"{where}flow") from None
    if item.timezone is not None and item.timezone not in _zones():
        raise InputError(
            f"unknown time zone {item.timezone!r} (use an IANA name like Europe/Paris)",
            where=f"{where}timezone",
        )
    if isinstance(flow, YamlFlow):
        have = {k for k, v in item.fields.items() if v.strip()}
        if item.name and item.name.strip():
            have.add("name")
        missing = sorted(required_fields(flow) - have)
        if missing:
            key = missing[0]
            label = "name" if key == "name" else f"fields.{key}"
            raise InputError(
                f"flow {item.flow!r} needs a value for {{{key}}}"
                + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""),
                where=f"{where}{label}",
            )
    check_template_values(flow, item.fields, item.name, where=where)
    sender = item.sender
    if senders:
        sender = resolve_sender(
            item.sender, flow_sender(flow), senders[0], senders, where=f"{where}sender"
        )
    return Enrollment(
        phone=phone,
        flow=item.flow,
        at=item.at,
        name=item.name,
        timezone=item.timezone,
        sender=sender,
        fields=dict(item.fields),
        opt_in=item.opt_in,
    )


def _validation_detail(exc: ValidationError, where: str) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    message = first["msg"]
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}{loc or 'item'}: {message}{suffix}"


def parse_enrollments(
    raw: bytes, flows: FlowRegistry, senders: Sequence[str] = ()
) -> tuple[list[Enrollment], bool]:
    """The request body as enrollments, and whether it was a list. `senders`: the
    configured phone number ids, the default first (`Settings.sender_ids`).

    Raises InputError (one line, naming `[index].field` for a list) on the first problem.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise InputError("the body is not valid JSON", where="body") from None
    is_list = isinstance(data, list)
    items = data if is_list else [data]
    if is_list and not items:
        raise InputError("the list is empty", where="body")
    if len(items) > MAX_BATCH:
        raise InputError(f"{len(items)} items; send at most {MAX_BATCH} per request", where="body")
    out: list[Enrollment] = []
    for index, item in enumerate(items):
        where = f"body[{index}]." if is_list else ""
        if not isinstance(item, dict):
            raise InputError(
                "must be a JSON object with phone and flow", where=where.rstrip(".") or "body"
            )
        try:
            request = EnrollRequest.model_validate(item)
        except ValidationError as exc:
            raise InputError(_validation_detail(exc, where)) from None
        out.append(_check(request, flows, where, senders))
    return out, is_list
