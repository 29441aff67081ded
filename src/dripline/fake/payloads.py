"""Webhook payload items in Meta's documented shapes, as pure functions.

Each builder returns one item of `value.messages[]` or `value.statuses[]`; the sender
wraps items in the `entry[].changes[].value` envelope. Sources (under
developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/
messages/): text, button, interactive, image (and the other media), reaction,
unsupported, system, status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dripline.fake.rules import ApiError, api_error, callback_data_echoed

__all__ = [
    "INBOUND_KINDS",
    "MEDIA_KINDS",
    "Inbound",
    "inbound_contacts",
    "inbound_message",
    "status_item",
]

MEDIA_KINDS = frozenset({"image", "video", "audio", "document", "sticker"})
# Kinds that are taps on one of our messages: they always carry `context` (button and
# interactive references: "the message containing the button the user tapped").
_TAP_KINDS = frozenset({"button", "button_reply", "list_reply"})
INBOUND_KINDS = frozenset(
    {"text", "button", "button_reply", "list_reply", "reaction", "unsupported", "system"}
    | MEDIA_KINDS
)
_MIME = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/ogg; codecs=opus",
    "document": "application/pdf",
    "sticker": "image/webp",
}


@dataclass(frozen=True, slots=True)
class Inbound:
    """What a user sends; which fields matter depends on `kind`.

    text: `text`. button (template quick-reply tap): `text` (the label) and `payload`.
    button_reply / list_reply: `reply_id`, `text` (the title), `description` (list rows).
    media: `text` is the caption (none for audio and stickers). reaction: `emoji`
    (None = reaction removed) to the message `reply_to`. unsupported:
    `unsupported_type`. system: `new_wa_id` (the user changed number).
    `reply_to`: the wamid of our message this one replies to (becomes `context.id`).
    """

    kind: str = "text"
    text: str = ""
    payload: str | None = None
    reply_id: str | None = None
    description: str | None = None
    emoji: str | None = None
    reply_to: str | None = None
    new_wa_id: str | None = None
    unsupported_type: str = "edit"

    def problem(self) -> str | None:
        """Why this cannot be sent as given, or None."""
        if self.kind not in INBOUND_KINDS:
            return f"kind must be one of {', '.join(sorted(INBOUND_KINDS))}"
        if self.kind in _TAP_KINDS and not self.reply_to:
            return f"a {self.kind} is a tap on one of our messages: it needs reply_to"
        if self.kind == "reaction" and not self.reply_to:
            return "a reaction needs reply_to (the message reacted to)"
        if self.kind == "system" and not self.new_wa_id:
            return "a system message needs new_wa_id (the user's new number)"
        return None


def inbound_message(
    inbound: Inbound,
    *,
    wa_id: str,
    message_id: str,
    timestamp: int,
    business_number: str,
    media_id: str = "1003383421387256",
) -> dict[str, Any]:
    """One `value.messages[]` item from `wa_id`; `business_number` is the display
    number the user wrote to (`context.from`)."""
    kind = inbound.kind
    item: dict[str, Any] = {"from": wa_id, "id": message_id, "timestamp": str(timestamp)}
    if inbound.reply_to and kind not in ("reaction", "system"):
        item["context"] = {"from": business_number, "id": inbound.reply_to}
    if kind == "text":
        item["type"] = "text"
        item["text"] = {"body": inbound.text}
    elif kind == "button":
        # A template quick-reply tap: `payload` is what the template set, `text` the label.
        item["type"] = "button"
        item["button"] = {"payload": inbound.payload or inbound.text, "text": inbound.text}
    elif kind in ("button_reply", "list_reply"):
        reply: dict[str, Any] = {"id": inbound.reply_id or inbound.text, "title": inbound.text}
        if kind == "list_reply" and inbound.description is not None:
            reply["description"] = inbound.description
        item["type"] = "interactive"
        item["interactive"] = {"type": kind, kind: reply}
    elif kind in MEDIA_KINDS:
        media: dict[str, Any] = {
            "mime_type": _MIME[kind],
            "sha256": "SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=",
            "id": media_id,
            # The image reference: `url` is being released gradually from November 2025.
            "url": f"https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid={media_id}",
        }
        if inbound.text and kind not in ("audio", "sticker"):
            media["caption"] = inbound.text
        item["type"] = kind
        item[kind] = media
    elif kind == "reaction":
        reaction: dict[str, Any] = {"message_id": inbound.reply_to}
        if inbound.emoji is not None:  # omitted when the user removes the reaction
            reaction["emoji"] = inbound.emoji
        item["type"] = "reaction"
        item["reaction"] = reaction
    elif kind == "unsupported":
        error = api_error(131051, "Message type is currently not supported.")
        item["errors"] = [
            {
                "code": error.code,
                "title": "Message type unknown",
                "message": "Message type unknown",
                "error_data": {"details": error.details},
            }
        ]
        item["type"] = "unsupported"
        item["unsupported"] = {"type": inbound.unsupported_type}
    else:  # system: "User <name> changed from <number> to <new number>"
        item["type"] = "system"
        item["system"] = {
            "body": f"User Fake User changed from {wa_id} to {inbound.new_wa_id}",
            "wa_id": inbound.new_wa_id,
            "type": "user_changed_number",
        }
    return item


def inbound_contacts(items: list[dict[str, Any]], name: str = "Fake User") -> list[dict[str, Any]]:
    """`value.contacts` for a batch of messages: one per sender. System messages have
    none ("unlike other incoming messages webhooks, system messages webhooks don't
    include a contacts array")."""
    seen: dict[str, dict[str, Any]] = {}
    for item in items:
        if item.get("type") != "system":
            seen.setdefault(item["from"], {"profile": {"name": name}, "wa_id": item["from"]})
    return list(seen.values())


def status_item(
    *,
    wamid: str,
    status: str,
    timestamp: int,
    recipient_id: str,
    callback_data: str | None,
    error: ApiError | None = None,
    pricing: dict[str, Any] | None = None,
    conversation: dict[str, Any] | None = None,
    callback_data_on_failed: bool = False,
) -> dict[str, Any]:
    """One `value.statuses[]` item (status reference). `recipient_id` is the user's
    WhatsApp ID (the send response's `contacts[0].wa_id`)."""
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": recipient_id,
    }
    if callback_data is not None and (callback_data_echoed(status) or callback_data_on_failed):
        item["biz_opaque_callback_data"] = callback_data
    if conversation is not None:
        item["conversation"] = conversation
    if pricing is not None:
        item["pricing"] = pricing
    if error is not None:
        item["errors"] = [error.webhook_error()]
    return item
