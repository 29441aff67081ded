"""`{name}`-style placeholders in message text, filled from the conversation.

Only `{identifier}` is a placeholder (no attribute access, no format specs, so a flow file
cannot reach into Python objects); `{{` and `}}` are literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["compiled", "placeholders_in", "render", "render_parts"]

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


# Texts parsed once: a flow's texts are few and fixed, and the dispatcher renders one or
# two per send. Bounded in case flows are reloaded with ever new texts.
_COMPILED_MAX = 4_096
_compiled: dict[str, tuple[str, ...] | None] = {}


def compiled(text: str) -> tuple[str, ...] | None:
    """`text` as (literal, name, literal, ..., literal) with `{{` and `}}` unescaped in
    the literals; None when it has a stray brace (`render` reports that)."""
    parts = _compiled.get(text)
    if parts is not None or text in _compiled:
        return parts
    pieces: list[str] = []
    literal: list[str] = []
    at = 0
    result: tuple[str, ...] | None
    try:
        for match in _TOKEN.finditer(text):
            literal.append(text[at : match.start()])
            at = match.end()
            piece = match.group(0)
            if piece in ("{{", "}}"):
                literal.append(piece[0])
            elif match.group(1) is None:
                raise ValueError(piece)
            else:
                pieces += ["".join(literal), match.group(1)]
                literal = []
        literal.append(text[at:])
        result = (*pieces, "".join(literal))
    except ValueError:
        result = None
    if len(_compiled) >= _COMPILED_MAX:
        _compiled.clear()
    _compiled[text] = result
    return result


def render_parts(parts: tuple[str, ...], value: Callable[[str], Any]) -> str:
    """`render` of a `compiled` text, asking `value(name)` for each placeholder (no
    mapping of every value built first); KeyError(name) when one has no value."""
    if len(parts) == 1:
        return parts[0]
    out = [parts[0]]
    for i in range(1, len(parts), 2):
        got = value(parts[i])
        if got is None or (isinstance(got, str) and not got.strip()):
            raise KeyError(parts[i])
        out += [str(got), parts[i + 1]]
    return "".join(out)
