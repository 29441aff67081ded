"""The Cloud API's error codes as data: what each means and how the dispatcher reacts.

Meta says to build logic on `error.code` (and `error_data.details`), never on titles,
subcodes or the HTTP status, so `classify` looks at the code first and falls back to
the status only for bare HTTP errors (a proxy's 429 or a load balancer's 503).
Source: Meta's error-codes page, row by row in `docs/reference/error-codes.md` (the
classes are explained there; a test keeps that file and `ERROR_TABLE` equal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

import structlog

__all__ = [
    "AUTH_RANGE",
    "ERROR_TABLE",
    "TEMPLATE_RANGE",
    "UNKNOWN_INFO",
    "ErrorClass",
    "ErrorInfo",
    "classify",
    "describe",
    "parse_retry_after",
]

_log = structlog.get_logger(__name__)


class ErrorClass(StrEnum):
    """How the dispatcher reacts to an error; the values are stable strings."""

    THROTTLE = "throttle"  # back off and reduce the global rate
    PAIR_THROTTLE = "pair_throttle"  # delay only this recipient
    QUALITY_THROTTLE = "quality_throttle"  # pause and alert, no quick retry
    TRANSIENT = "transient"  # retry with backoff
    WINDOW = "window"  # 24 h window closed: send a template instead
    PERMANENT = "permanent"  # fail this message with the reason
    AUTH = "auth"  # stop sending (circuit breaker), alert
    ACCOUNT = "account"  # account restricted or unpaid: stop and alert
    UNKNOWN = "unknown"  # a code not in the table: bounded retries, then fail


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    meaning: str
    error_class: ErrorClass
    reaction: str


def _info(meaning: str, error_class: ErrorClass, reaction: str) -> ErrorInfo:
    return ErrorInfo(meaning, error_class, reaction)


_T, _PT, _QT = ErrorClass.THROTTLE, ErrorClass.PAIR_THROTTLE, ErrorClass.QUALITY_THROTTLE
_TR, _W, _P = ErrorClass.TRANSIENT, ErrorClass.WINDOW, ErrorClass.PERMANENT
_AU, _AC = ErrorClass.AUTH, ErrorClass.ACCOUNT

_STOP = "stop sending (circuit breaker) and alert; never fail the backlog"
_BACK_OFF = "back off and reduce the send rate"
_RETRY = "retry with backoff"
_FAIL = "fail the message with the reason; do not retry"
_ALERT = "stop sending and alert an operator"
_TPL = _FAIL + "; alert"
# Codes from endpoints dripline never calls (template management, migration, insights,
# synchronization): if one ever reaches a send, fail that message rather than loop.
_OFF_PATH = _FAIL + " (not a /messages error)"


def _codes(cls: ErrorClass, reaction: str, rows: dict[int, str]) -> dict[int, ErrorInfo]:
    return {code: ErrorInfo(meaning, cls, reaction) for code, meaning in rows.items()}


# Every code on Meta's error-codes page; docs/reference/error-codes.md is the sourced
# version of this table and a unit test keeps the two equal.
ERROR_TABLE: dict[int, ErrorInfo] = {
    **_codes(
        _AU,
        _STOP,
        {
            0: "AuthException: unable to authenticate the app user",
            3: "API method: missing capability or permission",
            10: "Permission denied or removed",
            190: "Access token expired or invalid",
            200: "No access token provided",
            131005: "Access denied: permission missing or removed",
        },
    ),
    **_codes(
        _T,
        _BACK_OFF,
        {
            4: "Too many calls: application rate limit",
            80007: "WhatsApp Business Account rate limit reached",
            130429: "Cloud API message throughput reached for this number",
        },
    ),
    131056: _info(
        "Pair rate limit: too many messages to the same recipient", _PT, "delay this recipient"
    ),
    131048: _info("Spam rate limit: messages flagged or blocked", _QT, "pause and alert"),
    131049: _info("Per-user marketing limit reached", _QT, "retry no sooner than 24 h"),
    131064: _info("Messaging limit for template classification violations", _QT, "pause and alert"),
    132069: _info("Flow throttled: 10 messages with it in the last hour", _QT, "retry in 1 h"),
    **_codes(
        _TR,
        _RETRY,
        {
            1: "Unknown API error",
            2: "Temporary API downtime",
            131000: "Something went wrong (unknown error)",
            131016: "Service temporarily unavailable",
            133004: "Server temporarily unavailable",
            134101: "Template still syncing (Marketing Messages API)",
            2494100: "Phone number in maintenance mode",
        },
    ),
    131057: _info("Account in maintenance mode", _TR, "retry after about a minute"),
    131047: _info(
        "Re-engagement: more than 24 h since the recipient last replied",
        _W,
        "send an approved template instead",
    ),
    **_codes(
        _P,
        _FAIL,
        {
            100: "Invalid parameter",
            130403: "The business blocked this user",
            130472: "Recipient is part of a marketing experiment",
            130497: "Account may not message users in this country",
            131008: "Required parameter is missing",
            131009: "Parameter value is not valid",
            131021: "Sender and recipient are the same number",
            131026: "Message undeliverable to the recipient",
            131030: "Recipient not in the allowed list (test number)",
            131051: "Unsupported message type",
            131052: "Media sent by the user could not be downloaded",
            131053: "Media upload failed",
            131055: "Method not allowed: marketing templates only",
            134100: "Only marketing messages supported",
            134102: "Template unavailable for use (Marketing Messages API)",
            135000: "Generic user error (invalid parameter)",
        },
    ),
    131050: _info("Recipient opted out of marketing messages", _P, "never retry"),
    **_codes(
        _P,
        _TPL,
        {
            131063: "Marketing templates disabled for this Cloud API configuration",
            132000: "Template parameter count mismatch",
            132001: "Template does not exist in this language",
            132005: "Template hydrated text too long",
            132007: "Template content violates a policy",
            132012: "Template parameter format mismatch",
            132015: "Template is paused for low quality",
            132016: "Template is disabled",
            132018: "Template parameter validation error",
            132068: "Flow is blocked",
        },
    ),
    **_codes(
        _P,
        _OFF_PATH,
        {
            200005: "Template insights unavailable",
            200006: "Template insights cannot be disabled",
            200007: "Template insights not enabled",
            1752041: "Duplicate onboarding request",
            2388012: "Phone number already in the account",
            2388019: "Template limit exceeded",
            2388039: "Template status cannot be changed",
            2388040: "Template field over its character limit",
            2388047: "Template header format incorrect",
            2388072: "Template body format incorrect",
            2388073: "Template footer format incorrect",
            2388091: "Number not eligible for a registration code",
            2388093: "Number not eligible to verify a registration code",
            2388103: "Phone number migration refused",
            2388293: "Too many template variables for its length",
            2388299: "Template variable at its start or end",
            2593107: "Synchronization API called too often",
            2593108: "Synchronization only within 24 h of onboarding",
        },
    ),
    **_codes(
        _AC,
        _ALERT,
        {
            33: "The business phone number has been deleted",
            368: "Temporarily blocked for policy violations",
            131031: "Business account locked or restricted",
            131037: "555 number has no approved display name",
            131042: "Business eligibility payment issue",
            131045: "Phone number not registered (certificate)",
            133000: "A previous deregistration failed",
            133005: "Two-step verification PIN incorrect",
            133006: "Phone number must be verified before registering",
            133008: "Too many two-step verification PIN guesses",
            133009: "Two-step verification PIN entered too quickly",
            133010: "Phone number not registered with the Cloud API",
            133015: "Phone number recently deleted; deletion not complete",
            133016: "Registration attempts rate limit: number blocked",
            134011: "WhatsApp Payments terms of service not accepted",
        },
    ),
}

# Meta's range of permission errors (200-299), kept out of the table to keep it short.
AUTH_RANGE = range(200, 300)
# Template errors Meta has not listed yet: dripline's rule, not Meta's (issue 12).
TEMPLATE_RANGE = range(132000, 133000)
_AUTH_RANGE_INFO = _info("API permission error (200-299)", _AU, _STOP)
_TEMPLATE_INFO = _info("Template error (132xxx)", _P, _TPL)
UNKNOWN_INFO = _info(
    "Error code not in dripline's error table",
    ErrorClass.UNKNOWN,
    "retry up to max_attempts, then fail; the same code repeatedly trips the breaker",
)
_BARE_429 = _info("HTTP 429 without an error body", _T, _BACK_OFF)
_BARE_5XX = _info("HTTP 5xx without an error body", _TR, _RETRY)
_BARE_401 = _info("HTTP 401 without an error body", _AU, _STOP)
_BARE_OTHER = _info("HTTP error without an error body", _TR, _RETRY)


def describe(code: int | None, http_status: int | None = None) -> ErrorInfo:
    """The table entry for `code`, or the fallback used for an unknown code / bare status.

    A code the table does not know is `unknown` (and logged): the dispatcher gives it
    bounded retries, never an endless outage loop.
    """
    if code is not None:
        info = ERROR_TABLE.get(code)
        if info is not None:
            return info
        if code in AUTH_RANGE:
            return _AUTH_RANGE_INFO
        if code in TEMPLATE_RANGE:
            return _TEMPLATE_INFO
        _log.warning("whatsapp.unknown_error_code", code=code, http_status=http_status)
        return UNKNOWN_INFO
    if http_status == 429:
        return _BARE_429
    if http_status is not None and http_status >= 500:
        return _BARE_5XX
    if http_status == 401:
        return _BARE_401
    _log.warning("whatsapp.unclassified_http_error", http_status=http_status)
    return _BARE_OTHER


def classify(code: int | None, http_status: int | None) -> ErrorClass:
    """The reaction class for an error `code` (Meta's `error.code`; `unknown` when the
    table lacks it) or, without a code, for the bare HTTP status: 429 throttle, 5xx
    transient, 401 auth, else transient."""
    return describe(code, http_status).error_class


def parse_retry_after(header: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date).

    None when absent or unparseable; never negative.
    """
    if header is None:
        return None
    value = header.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(delta, 0.0)
