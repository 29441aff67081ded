"""Phone numbers: the spellings of one WhatsApp user's number (`phone_variants`)."""

from __future__ import annotations

import pytest

from dripline.fake.rules import wa_id_for
from dripline.phones import is_same_user, phone_variants


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        # Brazil: the mobile ninth digit, both ways (area 31: registered without it).
        ("+5531988887777", ("+5531988887777", "+553188887777")),
        ("553188887777", ("+553188887777", "+5531988887777")),
        ("+5511987654321", ("+5511987654321", "+551187654321")),
        # 13 digits without a 9 after the area code: not a ninth-digit number.
        ("+5531888877777", ("+5531888877777",)),
        # An area code with a 0 is not Brazilian numbering: left alone.
        ("+550188887777", ("+550188887777",)),
        # Mexico: 52 + 10 digits and 521 + 10 digits.
        ("+525512345678", ("+525512345678", "+5215512345678")),
        ("5215512345678", ("+5215512345678", "+525512345678")),
        # Argentina: 54 + 10 digits and 549 + 10 digits.
        ("+541112345678", ("+541112345678", "+5491112345678")),
        ("5491112345678", ("+5491112345678", "+541112345678")),
        # Everyone else: the number only.
        ("+14155550123", ("+14155550123",)),
        ("+447700900123", ("+447700900123",)),
        ("+5255123456", ("+5255123456",)),  # too short for Mexico's rule
    ],
)
def test_variants(number: str, expected: tuple[str, ...]) -> None:
    assert phone_variants(number) == expected


@pytest.mark.parametrize(
    "number",
    ["+5531988887777", "+5521987654321", "+525512345678", "+541112345678", "+14155550123"],
)
def test_the_id_meta_may_report_is_a_variant_and_back(number: str) -> None:
    # Whatever ID the Cloud API reports for a number, the number is among that ID's
    # variants: a reply `from` the ID finds the conversation enrolled with the number.
    for rule in ("regional", "all", "none"):
        wa_id = wa_id_for(number, rule)
        assert "+" + wa_id in phone_variants(number)
        assert number in phone_variants(wa_id)


@pytest.mark.parametrize(
    ("phone", "wa_id", "sender", "same"),
    [
        # The learned WhatsApp ID decides first.
        ("+5531988887777", "553188887777", "553188887777", True),
        ("+525512345678", "5215512345678", "5215512345678", True),
        # No ID learned yet (nothing sent, or sent before it was stored): the variants.
        ("+5531988887777", None, "553188887777", True),
        ("+525512345678", None, "5215512345678", True),
        ("+541112345678", None, "5491112345678", True),
        # The enrolled number itself always matches.
        ("+14155550123", None, "14155550123", True),
        ("+14155550123", "14155550123", "+14155550123", True),
        ("+5531988887777", "553188887777", "5531988887777", True),
        # A known ID that differs: the variant is someone else.
        ("+5531988887777", "5531988880000", "553188887777", False),
        # Unrelated numbers.
        ("+14155550123", None, "14155550124", False),
        ("+525512345678", None, "5215512345679", False),
    ],
)
def test_is_same_user(phone: str, wa_id: str | None, sender: str, same: bool) -> None:
    assert is_same_user(phone, wa_id, sender) is same
