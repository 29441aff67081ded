"""Every error dripline raises on purpose.

    DriplineError
    ├── ConfigError            settings, URLs, files the operator wrote
    ├── InputError             user data: phones, CSV rows, flow files, API bodies
    │   ├── InvalidPhoneError
    │   ├── FlowError
    │   └── SuppressedError    enrolling a number that opted out, without a new opt-in
    ├── StoreError             the database
    │   └── TransientStoreError    a retry will do (deadlock, serialization failure)
    │       └── DatabaseUnavailable
    ├── WhatsAppError          the Cloud API answered with an error (code, class, status)
    │   └── TransportError     no usable answer: timeout, reset, malformed body
    └── CircuitOpenError       sending stopped after an auth/account error

Messages are one line a user can act on; none carries a secret.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "DatabaseUnavailable",
    "DriplineError",
    "FlowError",
    "InputError",
    "InvalidPhoneError",
    "StoreError",
    "SuppressedError",
    "TransientStoreError",
    "TransportError",
    "WhatsAppError",
]


class DriplineError(Exception):
    """Base of every dripline error."""


class ConfigError(DriplineError):
    """A setting, URL or configuration file is wrong."""


class InputError(DriplineError):
    """User-supplied data is invalid; `where` names the field, file or line."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class InvalidPhoneError(InputError):
    """A phone number is not a valid E.164 number."""


class FlowError(InputError):
    """A flow definition is invalid or a flow name is unknown."""


class SuppressedError(InputError):
    """Enrollment item `index` is a number that opted out (a STOP, or 131050) and the
    caller did not state a new opt-in. `reason` is the message without `where`."""

    def __init__(self, reason: str, *, index: int, phone: str, where: str | None = None) -> None:
        self.reason = reason
        self.index = index
        self.phone = phone
        super().__init__(reason, where=where)

    def at(self, where: str) -> SuppressedError:
        """The same error, naming the caller's field or line."""
        return SuppressedError(self.reason, index=self.index, phone=self.phone, where=where)


class StoreError(DriplineError):
    """The database refused or failed an operation."""


class TransientStoreError(StoreError):
    """The database refused this attempt, but the same call may succeed if retried."""


class DatabaseUnavailable(TransientStoreError):
    """The database cannot be reached (yet); callers may retry with backoff."""


class WhatsAppError(DriplineError):
    """The Cloud API answered an error.

    `error_class` is one of the classes in `dripline.whatsapp.errors` and decides the
    dispatcher's reaction; `code` is Meta's `error.code` (None for a bare HTTP error).
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None,
        error_class: str,
        http_status: int | None = None,
        details: str | None = None,
        fbtrace_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.code = code
        self.error_class = error_class
        self.http_status = http_status
        self.details = details
        self.fbtrace_id = fbtrace_id
        self.retry_after_s = retry_after_s
        super().__init__(message)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, error_class={self.error_class!r}, "
            f"http_status={self.http_status!r}, message={str(self)!r})"
        )


class TransportError(WhatsAppError):
    """No usable answer from the API (timeout, connection error, malformed body).

    `maybe_sent` is True when the request may have reached the API before failing
    (a read timeout): resending it could deliver the message twice.
    """

    def __init__(self, message: str, *, maybe_sent: bool, http_status: int | None = None) -> None:
        self.maybe_sent = maybe_sent
        super().__init__(message, code=None, error_class="transient", http_status=http_status)


class CircuitOpenError(DriplineError):
    """Sending is stopped because the API rejected our credentials or account."""
