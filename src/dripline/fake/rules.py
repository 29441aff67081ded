"""Meta's Cloud API rules as pure functions: no I/O, no clock, no aiohttp.

Time is passed in (seconds on whatever monotonic scale the caller uses) and randomness
comes from an injected `random.Random`, so the fake's HTTP app and an in-process
simulator can share these decisions and replay them exactly. Each rule names its source;
docs/fake-cloud-api.md lists the sources in full. Abbreviations used below:

    [SM]  developers.facebook.com/documentation/business-messaging/whatsapp/messages/send-messages
    [EC]  .../whatsapp/support/error-codes (current page; HTTP statuses from its earlier
          revision, which had an "HTTP Status Code" column)
    [ST]  .../whatsapp/webhooks/reference/messages/status
    [MR]  developers.facebook.com/docs/whatsapp/cloud-api/reference/messages (Messages API
          reference, `biz_opaque_callback_data`)
    [PN]  .../whatsapp/business-phone-numbers/phone-numbers
    [TP]  .../whatsapp/throughput
    [WE]  .../whatsapp/webhooks/reference/messages/errors
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ERROR_HREF",
    "FREE_FORM_EXEMPT",
    "THROUGHPUT_LEVELS",
    "THROUGHPUT_RATES",
    "WINDOW_S",
    "ApiError",
    "BrazilRule",
    "SendDecision",
    "StatusEvent",
    "StatusTimings",
    "WindowBook",
    "WindowMode",
    "api_error",
    "callback_data_echoed",
    "conversation_for",
    "decide_send",
    "is_undeliverable",
    "pricing_for",
    "status_sequence",
    "throughput_level_for",
    "value_error",
    "wa_id_for",
    "window_open",
]

# [SM] "Customer service windows": a user's message starts a 24-hour timer; each new
# message resets it.
WINDOW_S = 24 * 3600.0

WindowMode = Literal["async", "sync", "off"]
BrazilRule = Literal["regional", "all", "none"]

# [SM]: outside the window "you can only send pre-approved template messages"; every
# other type (text, media, interactive, reaction, ...) is a service message.
FREE_FORM_EXEMPT = frozenset({"template"})

# The link Meta puts in webhook error objects ([ST] failed example, [WE] example).
ERROR_HREF = "/documentation/business-messaging/whatsapp/support/error-codes"

# code -> (title, default details, HTTP status). Titles are what Meta puts after "(#code)"
# in `message`; details follow [EC]; statuses from [EC]'s earlier revision.
_CATALOGUE: dict[int, tuple[str, str, int]] = {
    1: ("An unknown error occurred", "Invalid request or possible server error.", 500),
    100: ("Invalid parameter", "The request included one or more unsupported parameters.", 400),
    190: ("Access token has expired", "Your access token has expired.", 401),
    130429: ("Rate limit hit", "Cloud API message throughput has been reached.", 400),
    131000: ("Something went wrong", "Message failed to send due to an unknown error.", 500),
    131026: ("Message undeliverable", "Message Undeliverable.", 400),
    131047: (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
        400,
    ),
    # Invalid interactive messages (fake/interactive.py).
    131008: ("Required parameter is missing", "A required parameter is missing.", 400),
    131009: ("Parameter value is not valid", "One or more parameter values are invalid.", 400),
    131051: ("Unsupported message type", "Unsupported message type.", 400),
    131056: (
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
        400,
    ),
    132000: (
        "Number of parameters does not match the expected number of params",
        "The number of variable parameter values included in the request did not match "
        "the number of variable parameters defined in the template.",
        400,
    ),
    # [EC] (earlier revision): 132001 is the one template error answered with HTTP 404.
    132001: (
        "Template name does not exist in the translation",
        "The template does not exist in the specified language or the template has not "
        "been approved.",
        404,
    ),
}


@dataclass(frozen=True, slots=True)
class ApiError:
    """One Cloud API error: the same code can come back synchronously or by webhook [EC]."""

    code: int
    title: str
    details: str
    http_status: int = 400

    @property
    def message(self) -> str:
        return f"(#{self.code}) {self.title}"

    def graph_body(self, fbtrace_id: str) -> dict[str, Any]:
        """The synchronous Graph API error body [EC] "Error response syntax"."""
        return {
            "error": {
                "message": self.message,
                "type": "OAuthException",
                "code": self.code,
                "error_data": {"messaging_product": "whatsapp", "details": self.details},
                "fbtrace_id": fbtrace_id,
            }
        }

    def webhook_error(self) -> dict[str, Any]:
        """The error object of a failed status or of `value.errors` ([ST], [WE]): `title`
        and `message` carry the same text."""
        return {
            "code": self.code,
            "title": self.title,
            "message": self.title,
            "error_data": {"details": self.details},
            "href": ERROR_HREF,
        }


def api_error(code: int, details: str | None = None) -> ApiError:
    """Meta's error for `code`, with `details` when the case has a more precise text."""
    title, default, status = _CATALOGUE.get(code, ("Error", "An error occurred.", 400))
    return ApiError(code, title, details or default, status)


# ------------------------------------------------------------------ recipient identity
def wa_id_for(number: str, brazil: BrazilRule = "regional") -> str:
    """The WhatsApp ID Meta reports for a phone number sent as `to`.

    [SM]/[PN] "WhatsApp user phone number formats": "For Brazil and Mexico, the extra
    added prefix of the phone number may be modified by the Cloud API"; the webhook
    references add "a WhatsApp user's ID and phone number may not always match". Meta
    gives no exact rule, so these follow what deployments report:

    - Brazil (55 + 2-digit area code + 9 + 8 digits, 13 digits): accounts outside area
      codes 11-28 are registered without the ninth digit, so the ID drops it
      ("regional", the default; "all" drops it everywhere, "none" never). Sources:
      Whapi's country rules (area codes 11-19, 21, 22, 24, 27, 28 keep the 9) and a
      Cloud API payload with recipient_id 5516992318222 (area 16, 9 kept).
    - Mexico (52 + 10 digits): the ID is the 521 + 10 digits form (pywa#155, Green API
      and Whapi country rules; numbers already sent as 521 + 10 stay as they are).
    - Argentina (54 + 10 digits, no 9 after 54): the ID is 549 + 10 digits
      (chatwoot#11053 and #13932: webhooks carry 549..., the number is dialled 54...).

    Any other number's ID is its digits.
    """
    digits = "".join(ch for ch in number if ch.isdigit())
    n = len(digits)
    if n == 13 and digits.startswith("55") and digits[4] == "9" and brazil != "none":
        if brazil == "all" or int(digits[2:4]) >= 31:
            return digits[:4] + digits[5:]
        return digits
    if n == 12 and digits.startswith("52"):
        return "521" + digits[2:]
    if n == 12 and digits.startswith("54") and digits[2] != "9":
        return "549" + digits[2:]
    return digits


# ------------------------------------------------------------------ the 24-hour window
def window_open(last_inbound_at: float | None, now: float, window_s: float = WINDOW_S) -> bool:
    """Whether free-form messages are allowed: the user wrote within `window_s` [SM]."""
    return last_inbound_at is not None and 0.0 <= now - last_inbound_at < window_s


class WindowBook:
    """When each user last wrote to each business number.

    The window belongs to the pair: [SM] "when a WhatsApp user messages you" (you: the
    business phone number the message was sent to), so a user who wrote to one number
    has no window with another number of the same business.
    """

    __slots__ = ("_last", "window_s")

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._last: dict[tuple[str, str], float] = {}

    def user_wrote(self, phone_number_id: str, wa_id: str, at: float) -> None:
        """The user's message at `at` opens (or resets) the window [SM]."""
        key = (phone_number_id, wa_id)
        previous = self._last.get(key)
        if previous is None or at > previous:
            self._last[key] = at

    def last_inbound(self, phone_number_id: str, wa_id: str) -> float | None:
        return self._last.get((phone_number_id, wa_id))

    def is_open(self, phone_number_id: str, wa_id: str, now: float) -> bool:
        return window_open(self._last.get((phone_number_id, wa_id)), now, self.window_s)

    def clear(self) -> None:
        self._last.clear()


# ------------------------------------------------------------------ accepting a message
@dataclass(frozen=True, slots=True)
class SendDecision:
    """What the API does with a valid, unthrottled send.

    `refuse`: answer synchronously with this error (nothing is sent).
    `fail_later`: answer 200 with a wamid, then report `failed` with this error by
    status webhook. [EC]: errors come back "synchronously as a Graph API response,
    asynchronously via Webhook, or sometimes through both methods".
    """

    refuse: ApiError | None = None
    fail_later: ApiError | None = None


_ACCEPT = SendDecision()


def decide_send(
    *,
    message_type: str,
    window_is_open: bool,
    window_mode: WindowMode,
    undeliverable: bool,
) -> SendDecision:
    """Apply the window rule, then deliverability.

    Outside the window only templates may be sent [SM]; otherwise 131047 [EC]. Meta does
    both: commonly accepted then failed by webhook (`async`, the default; reported by
    integrators, e.g. fabrahaingo/joel#314 "Meta accepts synchronously, then rejects
    async via the status webhook"), sometimes refused at once (`sync`). `off` disables
    the rule (benchmarks only). An undeliverable number (131026 [EC]: not on WhatsApp,
    terms not accepted, old client) is accepted and fails later.
    """
    if window_mode != "off" and message_type not in FREE_FORM_EXEMPT and not window_is_open:
        error = api_error(131047)
        if window_mode == "sync":
            return SendDecision(refuse=error)
        return SendDecision(fail_later=error)
    if undeliverable:
        return SendDecision(fail_later=api_error(131026))
    return _ACCEPT


def is_undeliverable(wa_id: str, fraction: float) -> bool:
    """Whether this number is one of the `fraction` that cannot receive messages.

    Decided by a stable hash of the ID (not by chance per message): a number that is not
    on WhatsApp fails every time. A keyed BLAKE2 rather than the CRC that picks repliers
    (`webhooks.reply_for`): CRC32 is affine, so a salted CRC would pick a set tied to
    the repliers instead of an independent one.
    """
    if fraction <= 0:
        return False
    digest = hashlib.blake2b(wa_id.encode(), digest_size=8, person=b"undeliver").digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


# ------------------------------------------------------------------ status webhooks
@dataclass(frozen=True, slots=True)
class StatusTimings:
    """Delays from acceptance to each status webhook, in seconds."""

    sent_s: float = 0.05
    delivered_s: float = 0.2
    read_s: float = 1.0


@dataclass(frozen=True, slots=True)
class StatusEvent:
    status: str  # sent | delivered | read | failed
    delay_s: float
    error: ApiError | None = None


def status_sequence(
    failure: ApiError | None,
    timings: StatusTimings,
    read_fraction: float,
    rng: random.Random,
) -> list[StatusEvent]:
    """The statuses one accepted message produces.

    Delivered: `sent`, `delivered`, then `read` for `read_fraction` of messages [ST].
    Failed: one `failed` carrying the error; [ST] lists "unable to be sent" and "unable
    to be delivered" as its triggers. Whether a `sent` precedes it is not documented
    (UNCONFIRMED); the fake sends none, so a receiver must fail a message it never saw
    sent.
    """
    if failure is not None:
        return [StatusEvent("failed", timings.sent_s, failure)]
    events = [StatusEvent("sent", timings.sent_s), StatusEvent("delivered", timings.delivered_s)]
    if read_fraction > 0 and rng.random() < read_fraction:
        events.append(StatusEvent("read", timings.read_s))
    return events


def callback_data_echoed(status: str) -> bool:
    """[MR] `biz_opaque_callback_data`: "Cloud API does not process this field, it just
    returns it as part of sent/delivered/read message webhooks". [ST] adds only that it
    is "only included if the business set a biz_opaque_callback_data value"; neither
    page puts it on `failed`, so a failure must be matched by its wamid."""
    return status in ("sent", "delivered", "read")


def pricing_for(
    status: str, message_type: str, category: str, in_window: bool
) -> dict[str, Any] | None:
    """[ST] `pricing`: on `sent` and on one of `delivered`/`read` (the fake: `delivered`),
    per-message pricing (`PMP`). `free_customer_service` covers "a utility template
    message or non-template message sent within a customer service window"."""
    if status not in ("sent", "delivered"):
        return None
    if message_type not in FREE_FORM_EXEMPT:
        category, kind = "service", "free_customer_service"
    elif category == "utility" and in_window:
        kind = "free_customer_service"
    else:
        kind = "regular"
    return {
        "billable": kind == "regular",
        "pricing_model": "PMP",
        "type": kind,
        "category": category,
    }


def conversation_for(
    pricing: dict[str, Any] | None, status: str, wamid: str, sent_at: float, api_version: int
) -> dict[str, Any] | None:
    """[ST] `conversation`: with `pricing`, for API v23.0 and lower only ("omitted
    entirely for v24.0+ unless the webhook is for a free entry point conversation"); its
    id unique per message; `expiration_timestamp` on `sent` only."""
    if pricing is None or api_version >= 24:
        return None
    conversation: dict[str, Any] = {
        "id": f"CONV{wamid[-16:]}",
        "origin": {"type": pricing["category"]},
    }
    if status == "sent":
        conversation["expiration_timestamp"] = str(int(sent_at + WINDOW_S))
    return conversation


def value_error(code: int = 130429, details: str | None = None) -> dict[str, Any]:
    """A value-level error (`entry.changes.value.errors`), tied to no message [WE]. The
    default is [WE]'s own example."""
    if code == 130429 and details is None:
        details = (
            "Message failed to send because there were too many messages sent from this "
            "phone number in a short period of time"
        )
    return api_error(code, details).webhook_error()


# ------------------------------------------------------------------ throughput
# [TP]: 80 messages per second by default, 1,000 after the automatic upgrade. The level
# names are those of the phone number's `throughput` field
# (`GET /<PHONE_NUMBER_ID>?fields=throughput` [TP] "Get throughput level").
THROUGHPUT_RATES = {"STANDARD": 80.0, "HIGH": 1000.0}
THROUGHPUT_LEVELS = ("STANDARD", "HIGH", "NOT_APPLICABLE")


def throughput_level_for(rate_per_s: float) -> str:
    """The level a number limited to `rate_per_s` reports (0 = unlimited = HIGH)."""
    if rate_per_s <= 0 or rate_per_s >= THROUGHPUT_RATES["HIGH"]:
        return "HIGH"
    return "STANDARD"
