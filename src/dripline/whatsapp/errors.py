"""The Cloud API's error codes as data: what each means and how the dispatcher reacts.

Meta says to build logic on `error.code` (and `error_data.details`), never on titles,
subcodes or the HTTP status, so `classify` looks at the code first and falls back to
the status only for bare HTTP errors (a proxy's 429 or a load balancer's 503).
Source: `shared/reference/whatsapp-cloud-api.md` section 2 (Meta's error-code page).
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

ERROR_TABLE: dict[int, ErrorInfo] = {
    # auth
    0: _info("AuthException: unable to authenticate the app user", _AU, _STOP),
    3: _info("API method: missing capability or permission", _AU, _STOP),
    10: _info("Permission denied or removed", _AU, _STOP),
    190: _info("Access token expired or invalid", _AU, _STOP),
    131005: _info("Access denied: permission missing or removed", _AU, _STOP),
    # throttle
    4: _info("Too many calls: application rate limit", _T, _BACK_OFF),
    80007: _info("WhatsApp Business Account rate limit reached", _T, _BACK_OFF),
    130429: _info("Cloud API message throughput reached for this number", _T, _BACK_OFF),
    # per-recipient and quality throttles
    131056: _info(
        "Pair rate limit: too many messages to the same recipient", _PT, "delay this recipient"
    ),
    131048: _info("Spam rate limit: messages flagged or blocked", _QT, "pause and alert"),
    131049: _info("Per-user marketing limit reached", _QT, "retry no sooner than 24 h"),
    # transient
    1: _info("Unknown API error", _TR, _RETRY),
    2: _info("Temporary API downtime", _TR, _RETRY),
    131000: _info("Something went wrong (unknown error)", _TR, _RETRY),
    131016: _info("Service temporarily unavailable", _TR, _RETRY),
    131057: _info("Account in maintenance mode", _TR, "retry after about a minute"),
    # window
    131047: _info(
        "Re-engagement: more than 24 h since the recipient last replied",
        _W,
        "send an approved template instead",
    ),
    # permanent
    100: _info("Invalid parameter", _P, _FAIL),
    131008: _info("Required parameter is missing", _P, _FAIL),
    131009: _info("Parameter value is not valid", _P, _FAIL),
    131021: _info("Sender and recipient are the same number", _P, _FAIL),
    131026: _info("Message undeliverable to the recipient", _P, _FAIL),
    131030: _info("Recipient not in the allowed list (test number)", _P, _FAIL),
    131050: _info("Recipient opted out of marketing messages", _P, "never retry"),
    131051: _info("Unsupported message type", _P, _FAIL),
    131053: _info("Media upload failed", _P, _FAIL),
    130472: _info("Recipient is part of a marketing experiment", _P, _FAIL),
    132000: _info("Template parameter count mismatch", _P, _FAIL + "; alert"),
    132001: _info("Template does not exist in this language", _P, _FAIL + "; alert"),
    132005: _info("Template hydrated text too long", _P, _FAIL + "; alert"),
    132007: _info("Template format character policy violated", _P, _FAIL + "; alert"),
    132012: _info("Template parameter format mismatch", _P, _FAIL + "; alert"),
    132015: _info("Template is paused for low quality", _P, _FAIL + "; alert"),
    132016: _info("Template is disabled", _P, _FAIL + "; alert"),
    135000: _info("Generic user error (invalid parameter)", _P, _FAIL),
    # account
    131031: _info("Business account locked or restricted", _AC, _ALERT),
    131042: _info("Business eligibility payment issue", _AC, _ALERT),
    131045: _info("Phone number not registered (certificate)", _AC, _ALERT),
    133010: _info("Phone number not registered with the Cloud API", _AC, _ALERT),
    368: _info("Temporarily blocked for policy violations", _AC, _ALERT),
}

# Meta's range of permission errors (200-299), kept out of the table to keep it short.
AUTH_RANGE = range(200, 300)
_AUTH_RANGE_INFO = _info("API permission error (200-299)", _AU, _STOP)
_TEMPLATE_INFO = _info("Template error (132xxx)", _P, _FAIL + "; alert")
_UNKNOWN_INFO = _info("Unknown error code", _TR, _RETRY)
_BARE_429 = _info("HTTP 429 without an error body", _T, _BACK_OFF)
_BARE_5XX = _info("HTTP 5xx without an error body", _TR, _RETRY)
_BARE_401 = _info("HTTP 401 without an error body", _AU, _STOP)
_BARE_OTHER = _info("HTTP error without an error body", _TR, _RETRY)


def describe(code: int | None, http_status: int | None = None) -> ErrorInfo:
    """The table entry for `code`, or the fallback used for an unknown code / bare status.

    Logs a warning for a code the table does not know (it is treated as transient).
    """
    if code is not None:
        info = ERROR_TABLE.get(code)
        if info is not None:
            return info
        if code in AUTH_RANGE:
            return _AUTH_RANGE_INFO
        if 132000 <= code <= 132999:
            return _TEMPLATE_INFO
        _log.warning("whatsapp.unknown_error_code", code=code, http_status=http_status)
        return _UNKNOWN_INFO
    if http_status == 429:
        return _BARE_429
    if http_status is not None and http_status >= 500:
        return _BARE_5XX
    if http_status == 401:
        return _BARE_401
    _log.warning("whatsapp.unclassified_http_error", http_status=http_status)
    return _BARE_OTHER


def classify(code: int | None, http_status: int | None) -> ErrorClass:
    """The reaction class for an error `code` (Meta's `error.code`) or, without a code,
    for the bare HTTP status: 429 throttle, 5xx transient, 401 auth, else transient."""
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
