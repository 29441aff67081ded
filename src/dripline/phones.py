"""Phone numbers: validation and normalisation to E.164 with `phonenumbers`."""

from __future__ import annotations

import phonenumbers
from phonenumbers import timezone as pn_timezone

from dripline.errors import InvalidPhoneError

__all__ = ["normalize_phone", "timezone_for_phone"]


def normalize_phone(raw: str, *, where: str | None = None) -> str:
    """Return `raw` as E.164 (`+16505551234`) or raise InvalidPhoneError."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhoneError("phone is empty", where=where)
    if not text.startswith("+"):
        # WhatsApp ids are digits without '+'; accept them, never guess a region.
        text = "+" + text
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneError(f"phone {raw!r} is not a number: {exc}", where=where) from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneError(f"phone {raw!r} is not a valid E.164 number", where=where)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def timezone_for_phone(e164: str) -> str | None:
    """The IANA time zone of a number when its country has exactly one, else None."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    zones = [z for z in pn_timezone.time_zones_for_number(parsed) if z != "Etc/Unknown"]
    return zones[0] if len(zones) == 1 else None
