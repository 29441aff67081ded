"""The purposes a re-ask adds to question, reminder, fallback and timeout. Pure.

A re-ask is its own send with its own idempotency key: the messages row's key is
(conversation, step, purpose), so re-ask k of a step is purpose `reask<k>` and a webhook
delivered twice can never send it twice. While the user has re-ask k and the reply
timeout runs, the conversation waits with purpose `timeout<k>`: a timeout like
`timeout`, which also remembers how many re-asks went out (the next invalid answer is
re-ask k+1, or the step's `on_invalid` after `max_reasks`). Both fit the 16-character
purpose column (max_reasks is at most 5).
"""

from __future__ import annotations

__all__ = ["is_reask", "is_timeout", "reask", "reasks_sent", "timeout_after"]

_REASK = "reask"
_TIMEOUT = "timeout"


def reask(k: int) -> str:
    """The purpose of re-ask number k (1-based)."""
    return f"{_REASK}{k}"


def timeout_after(k: int) -> str:
    """The waiting purpose once k re-asks went out (`timeout` for none)."""
    return _TIMEOUT if k == 0 else f"{_TIMEOUT}{k}"


def _number(purpose: str, prefix: str) -> int | None:
    rest = purpose[len(prefix) :] if purpose.startswith(prefix) else None
    return int(rest) if rest and rest.isascii() and rest.isdigit() else None


def is_reask(purpose: str) -> bool:
    return _number(purpose, _REASK) is not None


def is_timeout(purpose: str) -> bool:
    """A due timeout: nothing to send, the step's `on_timeout` applies."""
    return purpose == _TIMEOUT or _number(purpose, _TIMEOUT) is not None


def reasks_sent(purpose: str) -> int:
    """How many re-asks of the step went out, judged by the conversation's purpose:
    k for `timeout<k>`, k-1 for a pending `reask<k>`, else 0."""
    k = _number(purpose, _TIMEOUT)
    if k is not None:
        return k
    k = _number(purpose, _REASK)
    return k - 1 if k is not None else 0
