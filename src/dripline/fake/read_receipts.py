"""Mark-as-read requests, as Meta documents them. Pure.

Cloud API guide "Mark messages as read" (developers.facebook.com, WhatsApp Business
Platform > Messages > Mark messages as read): `POST /{phone_number_id}/messages` with

    {"messaging_product": "whatsapp", "status": "read", "message_id": "<WAMID>"}

where the message id is the `messages[].id` of a message the business number received
(webhook). Success answers `{"success": true}`. "If you mark a message as read with an
invalid message ID, the API returns error code 131009 ("Parameter value is not valid")";
a message the business itself sent cannot be marked read ("You cannot mark outgoing
messages you sent as read"), so its wamid is an invalid id too. Marking a message read
also marks the earlier messages of that conversation read. Meta asks for it within 30
days of receipt but documents no error for later; the fake refuses nothing for age.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dripline.fake.validate import Problem

__all__ = ["INVALID_ID", "check_read", "is_read_request"]

INVALID_ID = 131009


def is_read_request(data: Any) -> bool:
    """A `/messages` body that sets a message's status (mark as read), not a send."""
    return isinstance(data, dict) and "status" in data and "to" not in data


def check_read(
    data: dict[str, Any], received: Mapping[str, tuple[str, str]], number: str
) -> Problem | tuple[str, str]:
    """The (business number, user) of the message `data` marks read, or Meta's refusal.
    `received`: wamid -> (business number, user) of every message users sent."""
    if data.get("messaging_product") != "whatsapp":
        return Problem(100, "The parameter messaging_product is required and must be whatsapp")
    if data.get("status") != "read":
        return Problem(100, "Invalid parameter: status can only be read")
    message_id = data.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        return Problem(100, "The parameter message_id is required")
    found = received.get(message_id)
    if found is None or found[0] != number:
        # Not a message this number received: unknown, another number's, or one we sent.
        return Problem(INVALID_ID, f"Parameter value is not valid: message_id {message_id}")
    return found
