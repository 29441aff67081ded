"""Which stored rows belong to the user a message came from, and which opt-outs stop an
enrollment: pure, shared by every backend.

Inbound messages come `from` the user's WhatsApp ID, which Meta warns may differ from
the number enrolled (see `dripline.phones`). A row belongs to sender `p` when
`dripline.phones.is_same_user` says so; this looks only at the rows filed under `p`'s
ID and its number's variants, so a batch costs what its senders do, not rows x senders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from dripline.errors import SuppressedError
from dripline.phones import is_same_user, phone_variants
from dripline.store.types import Enrollment, Suppression

__all__ = ["RowsByUser", "blocking", "lifted_suppressions", "suppression_phones"]

T = TypeVar("T")


class RowsByUser(Generic[T]):
    """Rows indexed by (phone, wa_id), to find a sender's rows in time proportional to
    that sender's rows, not to every row of the batch."""

    def __init__(self, rows: Iterable[T], key: Callable[[T], tuple[str, str | None]]) -> None:
        self._key = key
        self._by_phone: dict[str, list[T]] = {}
        self._by_wa_id: dict[str, list[T]] = {}
        for row in rows:
            phone, wa_id = key(row)
            self._by_phone.setdefault(phone, []).append(row)
            if wa_id is not None:
                self._by_wa_id.setdefault(wa_id, []).append(row)

    def of(self, sender: str) -> list[T]:
        """The rows of the user writing from `sender` (E.164), each once, in the order
        given to the index."""
        candidates = list(self._by_wa_id.get(sender.lstrip("+"), ()))
        for variant in phone_variants(sender):
            candidates += self._by_phone.get(variant, ())
        seen: set[int] = set()
        out = []
        for row in candidates:
            if id(row) not in seen and is_same_user(*self._key(row), sender):
                seen.add(id(row))
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
