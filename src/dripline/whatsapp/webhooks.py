"""Webhook signatures and payload parsing.

Meta POSTs batches shaped `{"object": "whatsapp_business_account", "entry": [{"changes":
[{"field": "messages", "value": {...}}]}]}`; each `value` carries `metadata`, and
`statuses[]` (delivery receipts for our sends) and/or `messages[]` (what users wrote).
`parse_webhook` flattens a batch into typed events; anything malformed raises
`InputError` naming the field, never another exception. Unknown fields are ignored,
since Meta adds fields without notice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dripline.errors import InputError

__all__ = [
    "SIGNATURE_HEADER",
    "InboundMessage",
    "StatusEvent",
    "WebhookBatch",
    "WebhookErrorInfo",
    "parse_webhook",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Hub-Signature-256"


def sign(body: bytes, app_secret: str) -> str:
    """The `X-Hub-Signature-256` value for `body`: "sha256=" + HMAC-SHA256 hex."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(body: bytes, header: str | None, app_secret: str) -> bool:
    """True when `header` is the valid signature of the raw `body` (constant time)."""
    if not header or not app_secret:
        return False
    return hmac.compare_digest(sign(body, app_secret).encode(), header.strip().encode())


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WebhookErrorInfo(_Model):
    """An error attached to a failed status (`statuses[].errors[]`) or a value."""

    code: int
    title: str | None = None
    message: str | None = None
    details: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _lift_details(cls, raw: Any) -> Any:
        # Meta nests the useful text as error_data.details.
        if isinstance(raw, dict) and "details" not in raw:
            data = raw.get("error_data")
            if isinstance(data, dict) and "details" in data:
                return {**raw, "details": data["details"]}
        return raw


class StatusEvent(_Model):
    """A delivery receipt: `status` is sent, delivered, read, failed or played."""

    id: str  # the wamid our send returned
    status: Literal["sent", "delivered", "read", "failed", "played", "deleted", "warning"]
    timestamp: int
    recipient_id: str
    errors: tuple[WebhookErrorInfo, ...] = ()
    biz_opaque_callback_data: str | None = None
    phone_number_id: str | None = None


class _Text(_Model):
    body: str


class _Button(_Model):
    text: str | None = None
    payload: str | None = None


class _Reply(_Model):
    id: str | None = None
    title: str | None = None


class _Interactive(_Model):
    type: str | None = None
    button_reply: _Reply | None = None
    list_reply: _Reply | None = None


class InboundMessage(_Model):
    """A message a user sent us. `text` is what they wrote or the button they pressed."""

    from_: str = Field(alias="from")
    id: str
    timestamp: int
    type: str
    text_body: str | None = None
    phone_number_id: str | None = None
    errors: tuple[WebhookErrorInfo, ...] = ()

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    @property
    def text(self) -> str | None:
        """The user's words: text body, quick-reply button text or interactive title."""
        return self.text_body


class WebhookBatch(_Model):
    """Every status and inbound message in one webhook POST, in payload order."""

    statuses: tuple[StatusEvent, ...] = ()
    messages: tuple[InboundMessage, ...] = ()


class _RawMessage(_Model):
    from_: str = Field(alias="from")
    id: str
    timestamp: int
    type: str
    text: _Text | None = None
    button: _Button | None = None
    interactive: _Interactive | None = None
    errors: tuple[WebhookErrorInfo, ...] = ()


class _RawStatus(_Model):
    id: str
    status: Literal["sent", "delivered", "read", "failed", "played", "deleted", "warning"]
    timestamp: int
    recipient_id: str
    errors: tuple[WebhookErrorInfo, ...] = ()
    biz_opaque_callback_data: str | None = None


class _Metadata(_Model):
    phone_number_id: str | None = None


class _Value(_Model):
    metadata: _Metadata | None = None
    statuses: tuple[_RawStatus, ...] = ()
    messages: tuple[_RawMessage, ...] = ()


class _Change(_Model):
    field: str | None = None
    value: _Value


class _Entry(_Model):
    id: str | None = None
    changes: tuple[_Change, ...] = ()


class _Payload(_Model):
    object: str
    entry: tuple[_Entry, ...]


def _message_text(raw: _RawMessage) -> str | None:
    if raw.text is not None:
        return raw.text.body
    if raw.button is not None:
        return raw.button.text or raw.button.payload
    if raw.interactive is not None:
        reply = raw.interactive.button_reply or raw.interactive.list_reply
        if reply is not None:
            return reply.title or reply.id
    return None


def _where(exc: ValidationError, prefix: str) -> str:
    first = exc.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    return f"{prefix}.{path}" if path else prefix


def parse_webhook(body: bytes | str | dict[str, Any]) -> WebhookBatch:
    """Parse a webhook body (raw bytes, text or decoded JSON) into typed events.

    Raises InputError naming the offending field for anything malformed.
    """
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"not valid JSON ({exc})", where="webhook body") from None
    else:
        data = body
    try:
        payload = _Payload.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(first["msg"], where=_where(exc, "webhook")) from None
    except RecursionError:
        raise InputError("nested too deeply", where="webhook body") from None
    statuses: list[StatusEvent] = []
    messages: list[InboundMessage] = []
    for entry in payload.entry:
        for change in entry.changes:
            value = change.value
            number = value.metadata.phone_number_id if value.metadata else None
            for raw_status in value.statuses:
                statuses.append(
                    StatusEvent(
                        id=raw_status.id,
                        status=raw_status.status,
                        timestamp=raw_status.timestamp,
                        recipient_id=raw_status.recipient_id,
                        errors=raw_status.errors,
                        biz_opaque_callback_data=raw_status.biz_opaque_callback_data,
                        phone_number_id=number,
                    )
                )
            for raw_message in value.messages:
                messages.append(
                    InboundMessage(
                        from_=raw_message.from_,
                        id=raw_message.id,
                        timestamp=raw_message.timestamp,
                        type=raw_message.type,
                        text_body=_message_text(raw_message),
                        phone_number_id=number,
                        errors=raw_message.errors,
                    )
                )
    return WebhookBatch(statuses=tuple(statuses), messages=tuple(messages))
