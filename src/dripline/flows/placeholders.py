"""`{name}`-style placeholders in message text, filled from the conversation.

Only `{identifier}` is a placeholder (no attribute access, no format specs, so a flow file
cannot reach into Python objects); `{{` and `}}` are literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["placeholders_in", "render"]

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


def placeholders_in(text: str) -> list[str]:
    """The placeholder names in `text`, in order; ValueError on a stray brace."""
    names: list[str] = []
    for match in _TOKEN.finditer(text):
        piece = match.group(0)
        if piece in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise ValueError(
                f"stray {piece!r} at character {match.start() + 1} "
                "(placeholders look like {name}; write {{ or }} for a literal brace)"
            )
        names.append(match.group(1))
    return names


def render(text: str, values: Mapping[str, Any]) -> str:
    """`text` with each placeholder replaced; KeyError(name) when one has no value.

    None and blank strings count as no value: WhatsApp rejects empty template
    parameters, and "Hi !" is worse than an error the operator sees.
    """

    def substitute(match: re.Match[str]) -> str:
        piece = match.group(0)
        if piece in ("{{", "}}"):
            return piece[0]
        key = match.group(1)
        if key is None:  # validated at load time; kept for text built elsewhere
            raise ValueError(f"stray {piece!r} in message text")
        value = values.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise KeyError(key)
        return str(value)

    return _TOKEN.sub(substitute, text)
