"""Several business phone numbers: which ones are configured, and which one a conversation
sends from. Pure.

The Cloud API limits, paces and windows each business phone number separately (its
throughput tier, its 130429 bucket, its 24-hour window per user), so dripline keeps
per-number state keyed by the phone number id. A conversation's `sender` column holds
the id it sends from; NULL means the default number (`whatsapp_phone_number_id`), so
single-number installations store nothing and the default can be changed in one place.

Where a conversation's number comes from, first found: the enrollment (API field
`sender`, CLI `--sender`, CSV column `sender`), then the flow file (`sender:`), then the
default. Only configured numbers are accepted: a typo would otherwise send from a number
whose token this installation may not hold, and its replies would land nowhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dripline.errors import InputError

__all__ = ["SenderNumber", "flow_sender", "parse_senders", "resolve_sender"]

# A phone number id is Meta's numeric Graph node id (15-17 digits in practice; the fake
# and tests use shorter ones, so only "digits" is enforced).
_ID = re.compile(r"^[0-9]{1,32}$")


class SenderNumber(BaseModel):
    """One configured business phone number and, optionally, its own send rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="the phone number id (digits), as in Meta's WhatsApp Manager")
    rate_per_s: float | None = Field(
        None,
        gt=0,
        description="messages per second from this number, all workers together; unset: "
        "its throughput tier as Meta reports it (else the global rate_per_s when set)",
    )

    @field_validator("id")
    @classmethod
    def _digits(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError(f"phone number id {value!r} must be digits only")
        return value


def parse_senders(raw: str) -> list[dict[str, object]]:
    """`DRIPLINE_SENDERS` in its short form, `ID[:RATE],ID[:RATE]` (e.g.
    `1111:300,2222:700`), as the dicts `SenderNumber` validates. JSON (a list of
    objects) is also accepted, as for every list setting."""
    out: list[dict[str, object]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        number, _, rate = part.partition(":")
        item: dict[str, object] = {"id": number.strip()}
        if rate.strip():
            try:
                item["rate_per_s"] = float(rate)
            except ValueError:
                why = f"rate {rate.strip()!r} of sender {number!r} is not a number"
                raise ValueError(why) from None
        out.append(item)
    return out


def flow_sender(flow: object) -> str | None:
    """The flow file's `sender:` (YAML flows; built-in Python flows have none)."""
    sender = getattr(getattr(flow, "spec", None), "sender", None)
    return sender if isinstance(sender, str) else None


def resolve_sender(
    requested: str | None,
    flow_sender: str | None,
    default: str,
    configured: Iterable[str],
    *,
    where: str = "sender",
) -> str | None:
    """The `sender` value to store for a new conversation: None for the default number.

    Raises InputError naming `where` when the requested number (or the flow's) is not a
    configured one.
    """
    chosen = requested if requested not in (None, "") else flow_sender
    if chosen in (None, "", default):
        return None
    known = {default, *configured}
    if chosen not in known:
        source = "" if requested not in (None, "") else "the flow's sender "
        raise InputError(
            f"{source}{chosen!r} is not a configured phone number id (configured: "
            f"{', '.join(sorted(known))}; add it to `senders`)",
            where=where,
        )
    return chosen
