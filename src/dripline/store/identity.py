"""Which stored rows belong to the user a message came from, and which opt-outs stop an
enrollment: pure, shared by every backend.

Inbound messages come `from` the user's WhatsApp ID, which Meta warns may differ from
the number enrolled (see `dripline.phones`). A row belongs to sender `p` when
`dripline.phones.is_same_user` says so; this looks only at the rows filed under `p`'s
ID and its number's variants, so a batch costs what its senders do, not rows x senders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from dripline.errors import SuppressedError
from dripline.phones import is_same_user, phone_variants
from dripline.store.types import Enrollment, Suppression

__all__ = ["blocking", "lifted_suppressions", "suppression_phones", "users_rows"]

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


def blocking(item: Enrollment, rows: Iterable[Suppression]) -> list[Suppression]:
    """The suppressions that stop `item` from being enrolled: its number or a variant of
    it (`phone_variants`: Meta may have reported the STOP from the other spelling),
    opted out of its business number. An item without a sender (sent from the default
    number, which the store does not know) is stopped by an opt-out from any of ours;
    a sender "" (not known when the opt-out was recorded) stops every number."""
    variants = set(phone_variants(item.phone))
    return [
        r
        for r in rows
        if r.phone in variants and (item.sender is None or r.sender in (item.sender, ""))
    ]


def lifted_suppressions(
    items: Sequence[Enrollment], rows: Sequence[Suppression]
) -> list[Suppression]:
    """The suppressions an enrollment lifts: those blocking items that state a new
    opt-in. Raises SuppressedError for the first item blocked without one."""
    lifted: dict[tuple[str, str], Suppression] = {}
    for index, item in enumerate(items):
        found = blocking(item, rows)
        if not found:
            continue
        if not item.opt_in:
            first = min(found, key=lambda r: r.created_at)
            business = f"number {first.sender}" if first.sender else "this business"
            why = f" ({first.reason})" if first.reason else ""
            raise SuppressedError(
                f"{item.phone} opted out of messages from {business} on "
                f"{first.created_at:%Y-%m-%d}{why}; enroll it only if the person opted in "
                'again (API: "opt_in": true; CLI: --opt-in)',
                index=index,
                phone=item.phone,
            )
        lifted.update(((r.sender, r.phone), r) for r in found)
    return [lifted[k] for k in sorted(lifted)]


def suppression_phones(items: Iterable[Enrollment]) -> list[str]:
    """Every spelling to look up in `suppressions` for these items."""
    return sorted({v for item in items for v in phone_variants(item.phone)})
