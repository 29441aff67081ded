"""Which WhatsApp IDs a batch of statuses teaches its conversations. Pure.

Replies come `from` the user's WhatsApp ID, which Meta warns may differ from the number
enrolled (Brazil's ninth digit, Mexico's 521); the dispatcher stores the ID the send
response reports (`contacts[0].wa_id`) on the conversation. When that response is lost
(a read timeout: the message is `unknown`), a status webhook is the only other word:
its `recipient_id` is the customer's WhatsApp ID (Meta's status webhook reference). So a
status that matched one of our messages teaches the conversation its ID, when:

- the status is `sent`, `delivered` or `read`: a message WhatsApp took for that user.
  A `failed` one can be for a number that is no WhatsApp user, whose `recipient_id` is
  at best the number as we sent it; learning that would hide the number's variants,
  which only match while no ID is known (`dripline.phones.is_same_user`);
- `recipient_id` is a usable ID (`usable_wa_id`: digits). A username-only user's status
  carries none, or a business-scoped user id in `recipient_user_id`: nothing is learned;
- the conversation knows no ID yet. A known one, from a send response, is never
  overwritten (the store guards this too, against a concurrent writer);
- the batch's statuses agree on it: two different IDs for one conversation teach
  nothing (which one is right is not ours to guess; the variants still match).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dripline.store import StatusUpdate

__all__ = ["usable_wa_id", "wa_ids_to_learn"]

_ACCEPTED = ("sent", "delivered", "read")


def usable_wa_id(raw: str | None) -> str | None:
    """`raw` as a WhatsApp ID (digits, '+' and spaces around dropped), or None when it is
    not one: absent, empty, or not digits (a username-only user's identifiers)."""
    digits = (raw or "").strip().lstrip("+")
    if digits.isascii() and digits.isdigit() and 4 <= len(digits) <= 15:
        return digits
    return None


def wa_ids_to_learn(
    updates: Iterable[StatusUpdate], matched: Mapping[str, tuple[int, str | None]]
) -> dict[int, str]:
    """Conversation id -> the WhatsApp ID to record on it (see the module docstring).

    `matched`: each matched status's wamid -> (its conversation, the conversation's
    `wa_id`), as `WebhookTx.apply_statuses` reports them."""
    found: dict[int, str | None] = {}
    for u in updates:
        if u.status not in _ACCEPTED or u.recipient_id is None:
            continue
        owner = matched.get(u.wamid)
        if owner is None or owner[1] is not None:
            continue
        conv_id = owner[0]
        if found.setdefault(conv_id, u.recipient_id) != u.recipient_id:
            found[conv_id] = None  # the batch disagrees with itself: learn nothing
    return {conv_id: wa_id for conv_id, wa_id in found.items() if wa_id is not None}
