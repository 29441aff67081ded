"""Phone numbers: validation and normalisation to E.164 with `phonenumbers`.

`phonenumbers` (its metadata tables) is imported by the functions that parse: the
dispatcher imports this module for the variants, and `dripline run --once` should not
pay for the tables unless a flow's quiet hours need a recipient's time zone.
"""

from __future__ import annotations

from dripline.errors import InvalidPhoneError

__all__ = ["is_same_user", "normalize_phone", "phone_variants", "timezone_for_phone"]


def normalize_phone(raw: str, *, where: str | None = None) -> str:
    """Return `raw` as E.164 (`+16505551234`) or raise InvalidPhoneError."""
    import phonenumbers

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
    import phonenumbers
    from phonenumbers import timezone as pn_timezone

    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    zones = [z for z in pn_timezone.time_zones_for_number(parsed) if z != "Etc/Unknown"]
    return zones[0] if len(zones) == 1 else None


def phone_variants(number: str) -> tuple[str, ...]:
    """The spellings under which one WhatsApp user's number may reach us, in E.164:
    `number` itself first, then its known variants.

    Meta's send response returns the user's WhatsApp ID (`contacts[0].wa_id`), and
    inbound messages come `from` it; Meta warns it may not match the number sent,
    notably in Brazil and Mexico ("WhatsApp user phone number formats",
    ../shared/reference/whatsapp-cloud-api.md section 7). The known cases, each
    direction (deployments' reports, the sources listed in `dripline.fake.rules.wa_id_for`):

    - Brazil: 55 + 2-digit area code + 8 digits, with or without the mobile ninth
      digit 9 in front of the 8 (accounts registered before the ninth digit keep the
      12-digit ID);
    - Mexico: 52 + 10 digits and 521 + 10 digits (the old mobile prefix 1);
    - Argentina: 54 + 10 digits and 549 + 10 digits (the mobile 9).

    A known `wa_id` beats any variant: these only match conversations whose `wa_id` is
    not known yet (see `dripline.inbox.plan`). Digits only are read, '+' optional.
    """
    digits = "".join(ch for ch in number if ch.isdigit())
    out = ["+" + digits]
    n = len(digits)
    if digits.startswith("55") and "0" not in digits[2:4]:
        if n == 13 and digits[4] == "9":
            out.append("+" + digits[:4] + digits[5:])
        elif n == 12:
            out.append("+" + digits[:4] + "9" + digits[4:])
    elif digits.startswith("52"):
        if n == 13 and digits[2] == "1":
            out.append("+52" + digits[3:])
        elif n == 12 and digits[2] != "1":
            out.append("+521" + digits[2:])
    elif digits.startswith("54"):
        if n == 13 and digits[2] == "9":
            out.append("+54" + digits[3:])
        elif n == 12 and digits[2] != "9":
            out.append("+549" + digits[2:])
    return tuple(out)


def is_same_user(phone: str, wa_id: str | None, sender: str) -> bool:
    """Whether a message `from` WhatsApp ID `sender` (E.164 or digits) comes from the user
    of a conversation enrolled as `phone` whose learned WhatsApp ID is `wa_id`.

    The learned ID decides first; the enrolled number itself always matches; a variant
    of it (`phone_variants`) only while no ID is known, because a known ID that differs
    says the variant is someone else's.
    """
    digits = "".join(ch for ch in sender if ch.isdigit())
    if wa_id is not None and wa_id == digits:
        return True
    e164 = "+" + digits
    if phone == e164:
        return True
    return wa_id is None and phone in phone_variants(e164)
