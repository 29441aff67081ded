"""Text that a database, a JSON response and an HTTP body can all hold.

JSON may carry a lone UTF-16 surrogate (`"\\ud83d"`, half an emoji cut by a truncating
client). Python decodes it into a `str` that no UTF-8 encoder accepts: stored, it breaks
every later read, response and send that touches it. Input we must keep (Meta's signed
webhooks) gets U+FFFD in its place; input we may refuse (the enrollment API) is refused
with a one-line reason. NUL is refused too: PostgreSQL text cannot hold it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["scrub_surrogates", "unstorable_reason"]

_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON text can only produce a surrogate through a \\uD800-\\uDFFF escape.
_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def unstorable_reason(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if _SURROGATE.search(value):
        return "must not contain lone UTF-16 surrogates (broken characters)"
    return None


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def scrub_surrogates(decoded: Any, source: str | bytes) -> Any:
    """`decoded` (the JSON value of `source`) with every lone surrogate replaced by
    U+FFFD; untouched (and not walked) when `source` has no surrogate escape. A valid
    pair (`\\ud83d\\ude00`) was already joined into one character by the decoder."""
    text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
    if not _ESCAPE.search(text):
        return decoded
    return _scrub(decoded)
