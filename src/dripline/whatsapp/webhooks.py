"""Webhook signatures and payload parsing.

Meta POSTs batches shaped `{"object": "whatsapp_business_account", "entry": [{"changes":
[{"field": "messages", "value": {...}}]}]}`; each `value` carries `metadata`, and
`statuses[]` (delivery receipts for our sends) and/or `messages[]` (what users wrote).
`parse_webhook` flattens a delivery into typed events (`webhook_types`).

Tolerant by item: Meta batches many updates in one delivery, so one malformed or unknown
item (a status without an id, an error without a code, a sub-object of the wrong type)
is skipped and listed in `WebhookBatch.rejected` with where it was and why, and every
other item of the delivery is still returned. Unknown status values, unknown message
types and messages without `from` (username-only users) are returned, not rejected: the
processor decides what they mean. Only a body that is not a webhook at all (not JSON,
not an object, no `object` or `entry`), or whose every item was rejected, raises
`InputError` naming the field. Unknown
fields are ignored, since Meta adds fields without notice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

from dripline.errors import InputError
from dripline.text import scrub_surrogates
from dripline.whatsapp.webhook_types import (
    Contact,
    Conversation,
    DeliveryError,
    InboundMessage,
    Pricing,
    RejectedItem,
    StatusEvent,
    WebhookBatch,
    WebhookErrorInfo,
)

__all__ = [
    "MEDIA_TYPES",
    "SIGNATURE_HEADER",
    "Contact",
    "DeliveryError",
    "InboundMessage",
    "RejectedItem",
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


# Inbound media objects share one shape (id, mime_type, sha256, caption; filename on
# documents): the image/video/document/audio/sticker webhook references.
MEDIA_TYPES = ("image", "video", "document", "audio", "sticker")


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # ids and numbers sometimes arrive as JSON numbers
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        # isascii: int() would also take Arabic-Indic digits and underscores.
        if digits.isascii() and digits.isdigit() and len(digits) <= 20:
            return int(text)
    return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _Walk:
    """Collects the events of one delivery and the items it had to skip."""

    def __init__(self) -> None:
        self.statuses: list[StatusEvent] = []
        self.messages: list[InboundMessage] = []
        self.errors: list[DeliveryError] = []
        self.contacts: list[Contact] = []
        self.rejected: list[RejectedItem] = []

    def reject(self, where: str, reason: str) -> None:
        self.rejected.append(RejectedItem(where=where, reason=reason))

    def items(self, value: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
        """The object items of an array field, rejecting the rest (absent is empty)."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.reject(where, "not an array")
            return []
        out = []
        for n, item in enumerate(value):
            if isinstance(item, dict):
                out.append((f"{where}.{n}", item))
            else:
                self.reject(f"{where}.{n}", "not an object")
        return out

    def error_list(self, value: Any, where: str) -> tuple[WebhookErrorInfo, ...]:
        out = []
        for at, raw in self.items(value, where):
            code = _int(raw.get("code"))
            if code is None:
                self.reject(f"{at}.code", "missing or not an integer")
                continue
            data = _obj(raw.get("error_data"))
            details = raw.get("details") if "details" in raw else data.get("details")
            out.append(
                WebhookErrorInfo(
                    code=code,
                    title=_str(raw.get("title")),
                    message=_str(raw.get("message")),
                    details=_str(details),
                    href=_str(raw.get("href")),
                )
            )
        return tuple(out)

    def change(self, value: dict[str, Any], where: str, account_id: str | None) -> None:
        meta = _obj(value.get("metadata"))
        number = _str(meta.get("phone_number_id"))
        display = _str(meta.get("display_phone_number"))
        for error in self.error_list(value.get("errors"), f"{where}.errors"):
            self.errors.append(
                DeliveryError(
                    error=error,
                    phone_number_id=number,
                    display_phone_number=display,
                    account_id=account_id,
                )
            )
        contacts = [
            _contact(raw, number)
            for _, raw in self.items(value.get("contacts"), f"{where}.contacts")
        ]
        self.contacts.extend(contacts)
        for at, raw in self.items(value.get("statuses"), f"{where}.statuses"):
            self.status(raw, at, number, display)
        for at, raw in self.items(value.get("messages"), f"{where}.messages"):
            self.message(raw, at, number, display, contacts)

    def status(
        self, raw: dict[str, Any], where: str, number: str | None, display: str | None
    ) -> None:
        wamid, status = _str(raw.get("id")), _str(raw.get("status"))
        if not wamid:
            self.reject(f"{where}.id", "missing or not a string")
            return
        if not status:
            self.reject(f"{where}.status", "missing or not a string")
            return
        conversation = pricing = None
        if isinstance(raw.get("conversation"), dict):
            conv = raw["conversation"]
            conversation = Conversation(
                id=_str(conv.get("id")),
                expiration_timestamp=_int(conv.get("expiration_timestamp")),
                origin_type=_str(_obj(conv.get("origin")).get("type")),
            )
        if isinstance(raw.get("pricing"), dict):
            p = raw["pricing"]
            billable = p.get("billable")
            pricing = Pricing(
                billable=billable if isinstance(billable, bool) else None,
                pricing_model=_str(p.get("pricing_model")),
                type=_str(p.get("type")),
                category=_str(p.get("category")),
            )
        self.statuses.append(
            StatusEvent(
                id=wamid,
                status=status,
                timestamp=_int(raw.get("timestamp")) or 0,
                recipient_id=_str(raw.get("recipient_id")) or "",
                errors=self.error_list(raw.get("errors"), f"{where}.errors"),
                biz_opaque_callback_data=_str(raw.get("biz_opaque_callback_data")),
                phone_number_id=number,
                display_phone_number=display,
                recipient_user_id=_str(raw.get("recipient_user_id")),
                recipient_parent_user_id=_str(raw.get("recipient_parent_user_id")),
                conversation=conversation,
                pricing=pricing,
            )
        )

    def message(
        self,
        raw: dict[str, Any],
        where: str,
        number: str | None,
        display: str | None,
        contacts: list[Contact],
    ) -> None:
        wamid = _str(raw.get("id"))
        if not wamid:
            self.reject(f"{where}.id", "missing or not a string")
            return
        kind = _str(raw.get("type")) or "unknown"
        sender, user_id = _str(raw.get("from")) or "", _str(raw.get("from_user_id"))
        contact = _sender(contacts, sender, user_id)
        fields: dict[str, Any] = {
            "from_": sender,
            "id": wamid,
            "timestamp": _int(raw.get("timestamp")) or 0,
            "type": kind,
            "phone_number_id": number,
            "display_phone_number": display,
            "errors": self.error_list(raw.get("errors"), f"{where}.errors"),
            "from_user_id": user_id or (contact.user_id if contact else None),
            "from_parent_user_id": _str(raw.get("from_parent_user_id")),
            "contact_name": contact.profile_name if contact else None,
            "username": contact.username if contact else None,
        }
        context = _obj(raw.get("context"))
        fields["context_id"] = _str(context.get("id"))
        fields["context_from"] = _str(context.get("from"))
        fields.update(_content(raw, kind))
        self.messages.append(InboundMessage(**fields))


def _contact(raw: dict[str, Any], number: str | None) -> Contact:
    profile = _obj(raw.get("profile"))
    return Contact(
        wa_id=_str(raw.get("wa_id")),
        user_id=_str(raw.get("user_id")),
        parent_user_id=_str(raw.get("parent_user_id")),
        profile_name=_str(profile.get("name")),
        username=_str(profile.get("username")),
        phone_number_id=number,
    )


def _sender(contacts: list[Contact], sender: str, user_id: str | None) -> Contact | None:
    for c in contacts:
        if (sender and c.wa_id == sender) or (user_id and c.user_id == user_id):
            return c
    return contacts[0] if len(contacts) == 1 else None


def _content(raw: dict[str, Any], kind: str) -> dict[str, Any]:
    """The type-specific fields, and `text_body`: what the user said, if anything."""
    out: dict[str, Any] = {}
    text = _str(_obj(raw.get("text")).get("body"))
    button = _obj(raw.get("button"))
    if button:
        out["button_payload"] = _str(button.get("payload"))
        out["button_text"] = _str(button.get("text"))
    interactive = _obj(raw.get("interactive"))
    reply_type = _str(interactive.get("type"))
    reply = _obj(interactive.get("button_reply")) or _obj(interactive.get("list_reply"))
    if reply:
        out["reply_type"] = reply_type
        out["reply_id"] = _str(reply.get("id"))
        out["reply_title"] = _str(reply.get("title"))
        out["reply_description"] = _str(reply.get("description"))
    if kind in MEDIA_TYPES:
        media = _obj(raw.get(kind))
        out["media_id"] = _str(media.get("id"))
        out["media_mime_type"] = _str(media.get("mime_type"))
        out["caption"] = _str(media.get("caption"))
        out["filename"] = _str(media.get("filename"))
    elif kind == "reaction":
        reaction = _obj(raw.get("reaction"))
        out["reaction_message_id"] = _str(reaction.get("message_id"))
        out["reaction_emoji"] = _str(reaction.get("emoji"))
    elif kind == "unsupported":
        out["unsupported_type"] = _str(_obj(raw.get("unsupported")).get("type"))
    elif kind == "system":
        system = _obj(raw.get("system"))
        out["system_type"] = _str(system.get("type"))
        out["system_body"] = _str(system.get("body"))
        out["system_wa_id"] = _str(system.get("wa_id")) or _str(system.get("new_wa_id"))
        out["system_user_id"] = _str(system.get("user_id"))
    # What the old parser returned as the user's words, in the same order.
    said = text
    if said is None and button:
        said = out.get("button_text") or out.get("button_payload")
    if said is None and reply:
        said = out.get("reply_title") or out.get("reply_id")
    out["text_body"] = said
    return out


def parse_webhook(body: bytes | str | dict[str, Any]) -> WebhookBatch:
    """Parse a webhook body (raw bytes, text or decoded JSON) into typed events.

    Raises InputError naming the field only when the body is not a webhook at all or
    nothing in it was usable; a bad item is skipped and listed in `rejected`, the
    others are returned.
    """
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"not valid JSON ({exc})", where="webhook body") from None
        # A lone surrogate would fail the whole batch's insert: keep the rest of it.
        data = scrub_surrogates(data, body)
    else:
        data = body
    if not isinstance(data, dict):
        raise InputError("not a JSON object", where="webhook")
    if not isinstance(data.get("object"), str):
        raise InputError("missing or not a string", where="webhook.object")
    if not isinstance(data.get("entry"), list):
        raise InputError("missing or not an array", where="webhook.entry")
    walk = _Walk()
    for at, entry in walk.items(data["entry"], "entry"):
        account = _str(entry.get("id"))
        for c_at, change in walk.items(entry.get("changes"), f"{at}.changes"):
            value = change.get("value")
            if not isinstance(value, dict):
                walk.reject(f"{c_at}.value", "missing or not an object")
                continue
            walk.change(value, f"{c_at}.value", account)
    if walk.rejected and not (walk.statuses or walk.messages or walk.errors):
        # Nothing usable at all: the body as a whole is malformed, so say so (the
        # processor records it on the inbox row) rather than return an empty batch.
        first = walk.rejected[0]
        more = f" (and {len(walk.rejected) - 1} more)" if len(walk.rejected) > 1 else ""
        raise InputError(first.reason + more, where=f"webhook.{first.where}")
    return WebhookBatch(
        statuses=tuple(walk.statuses),
        messages=tuple(walk.messages),
        errors=tuple(walk.errors),
        contacts=tuple(walk.contacts),
        rejected=tuple(walk.rejected),
    )
