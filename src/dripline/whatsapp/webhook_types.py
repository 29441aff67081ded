"""What a webhook delivery contains, as typed values (`webhooks.parse_webhook` builds them).

Field names follow Meta's webhook references (pages under
https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/):
messages/status for `StatusEvent`; messages/text, button, interactive, image (and the
other media), reaction, unsupported and system for `InboundMessage`; messages/errors for
`DeliveryError`. Business-scoped user ids (`user_id`, `from_user_id`,
`recipient_user_id`, `username`) follow the business-scoped-user-ids page. Every field
Meta may omit is optional here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "KNOWN_STATUSES",
    "Contact",
    "Conversation",
    "DeliveryError",
    "InboundMessage",
    "Pricing",
    "RejectedItem",
    "StatusEvent",
    "WebhookBatch",
    "WebhookErrorInfo",
]

# [ST]: sent, delivered, read, failed, played. `deleted` and `warning` came from older
# versions of the page; anything else is kept as sent and left to the processor.
KNOWN_STATUSES = frozenset({"sent", "delivered", "read", "failed", "played", "deleted", "warning"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WebhookErrorInfo(_Model):
    """An error object: on a failed status, an inbound message or a whole value."""

    code: int
    title: str | None = None
    message: str | None = None
    details: str | None = None
    href: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _lift_details(cls, raw: Any) -> Any:
        # Meta nests the useful text as error_data.details.
        if isinstance(raw, dict) and "details" not in raw:
            data = raw.get("error_data")
            if isinstance(data, dict) and "details" in data:
                return {**raw, "details": data["details"]}
        return raw


class Conversation(_Model):
    """`statuses[].conversation`: only on some sent/delivered/read statuses (omitted on
    v24.0+ outside free entry points, [ST])."""

    id: str | None = None
    expiration_timestamp: int | None = None
    origin_type: str | None = None


class Pricing(_Model):
    """`statuses[].pricing`: on sent and one of delivered/read ([ST])."""

    billable: bool | None = None
    pricing_model: str | None = None
    type: str | None = None
    category: str | None = None


class StatusEvent(_Model):
    """A delivery receipt for a message we sent.

    `status` is what Meta sent (sent, delivered, read, failed, played, or a value Meta
    adds later: kept, never a reason to drop the delivery). `recipient_id` is "" when
    Meta omits it (a username-only user; then `recipient_user_id` is set).
    """

    id: str  # the wamid our send returned
    status: str
    timestamp: int  # 0 when missing or unreadable
    recipient_id: str = ""
    errors: tuple[WebhookErrorInfo, ...] = ()
    biz_opaque_callback_data: str | None = None
    phone_number_id: str | None = None
    display_phone_number: str | None = None
    recipient_user_id: str | None = None
    recipient_parent_user_id: str | None = None
    conversation: Conversation | None = None
    pricing: Pricing | None = None

    @property
    def known_status(self) -> bool:
        return self.status in KNOWN_STATUSES


class InboundMessage(_Model):
    """A message a user sent us. `text` is what they wrote or the button they pressed.

    `from_` is "" when Meta omits `from` (a username-only user: `from_user_id` is set).
    Only the fields of the message's `type` are filled; the rest stay None.
    """

    from_: str = Field(default="", alias="from")
    id: str
    timestamp: int  # 0 when missing or unreadable
    type: str
    text_body: str | None = None
    phone_number_id: str | None = None
    errors: tuple[WebhookErrorInfo, ...] = ()
    display_phone_number: str | None = None
    from_user_id: str | None = None
    from_parent_user_id: str | None = None
    contact_name: str | None = None  # contacts[].profile.name of the sender
    username: str | None = None  # contacts[].profile.username of the sender
    context_id: str | None = None  # the wamid this message replies to
    context_from: str | None = None
    button_payload: str | None = None  # type "button": a template quick-reply tap
    button_text: str | None = None
    reply_type: str | None = None  # type "interactive": button_reply or list_reply
    reply_id: str | None = None
    reply_title: str | None = None
    reply_description: str | None = None
    media_id: str | None = None  # image, video, document, audio, sticker
    media_mime_type: str | None = None
    caption: str | None = None
    filename: str | None = None
    reaction_message_id: str | None = None  # type "reaction"; emoji None = removed
    reaction_emoji: str | None = None
    unsupported_type: str | None = None  # type "unsupported": what the user sent
    system_type: str | None = None  # type "system": user_changed_number, ...
    system_body: str | None = None
    system_wa_id: str | None = None  # the new wa_id after a number change
    system_user_id: str | None = None

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    @property
    def text(self) -> str | None:
        """The user's words: text body, quick-reply button text or interactive title."""
        return self.text_body


class Contact(_Model):
    """`value.contacts[]`: who wrote. `wa_id` may be absent for a username-only user."""

    wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    profile_name: str | None = None
    username: str | None = None
    phone_number_id: str | None = None


class DeliveryError(_Model):
    """A value-level error (`entry[].changes[].value.errors[]`): a problem not tied to
    one message (e.g. 130429 on the errors webhook reference)."""

    error: WebhookErrorInfo
    phone_number_id: str | None = None
    display_phone_number: str | None = None
    account_id: str | None = None  # entry[].id, the WhatsApp Business Account


class RejectedItem(_Model):
    """One item of a delivery that could not be used; the rest of the delivery was."""

    where: str  # e.g. entry.0.changes.0.value.statuses.3.id
    reason: str


class WebhookBatch(_Model):
    """Everything in one webhook POST, in payload order."""

    statuses: tuple[StatusEvent, ...] = ()
    messages: tuple[InboundMessage, ...] = ()
    errors: tuple[DeliveryError, ...] = ()
    contacts: tuple[Contact, ...] = ()
    rejected: tuple[RejectedItem, ...] = ()
