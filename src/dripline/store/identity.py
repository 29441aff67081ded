"""Which stored rows belong to the user a message came from: shared by every backend.

Inbound messages come `from` the user's WhatsApp ID, which Meta warns may differ from
the number enrolled (see `dripline.phones`). A row belongs to sender `p` when
`dripline.phones.is_same_user` says so; this looks only at the rows filed under `p`'s
ID and its number's variants, so a batch costs what its senders do, not rows x senders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from dripline.phones import is_same_user, phone_variants

__all__ = ["users_rows"]

T = TypeVar("T")


def users_rows(
    sender: str, rows: Iterable[T], key: Callable[[T], tuple[str, str | None]]
) -> list[T]:
    """The rows (each with `key(row)` = (phone, wa_id)) of the user writing from `sender`
    (E.164), in the order given."""
    digits = sender.lstrip("+")
    variants = set(phone_variants(sender))
    out = []
    for row in rows:
        phone, wa_id = key(row)
        if (wa_id == digits or phone in variants) and is_same_user(phone, wa_id, sender):
            out.append(row)
    return out
