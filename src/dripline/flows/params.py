"""Meta's rules for template parameter text, checked before anything is sent.

The Cloud API refuses a template whose text parameter contains a newline or a tab, or
more than 4 consecutive spaces: error 132018 ("Template validation error: there's an
issue with the parameters in your template", Meta's error-codes page, Marketing Messages
table), whose `error_data.details` reads "Param text cannot have new-line/tab characters
or more than 4 consecutive spaces" (Meta's API answer; the sentence is not on a Meta
documentation page we could find: UNCONFIRMED as documentation, confirmed as behaviour
by public integrations that quote it). A flow that breaks the rule fails every send of
that step permanently, so dripline checks it three times:

- `dripline flows check`: literal text in a flow file (`literal_problem`);
- enrollment: a field whose value lands in a text parameter (`field_value_problems`);
- send time: anything that still slipped through is cleaned (`sanitize`), never sent
  as is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from dripline.flows.placeholders import placeholders_in

__all__ = ["MAX_SPACES", "field_value_problems", "literal_problem", "sanitize", "value_problem"]

MAX_SPACES = 4
_BAD = re.compile(r"[\n\r\t]| {5,}")
_RUN = re.compile(r" {5,}")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{[A-Za-z_][A-Za-z0-9_]*\}")


def value_problem(text: str) -> str | None:
    """Why Meta would refuse `text` as a parameter value, or None."""
    match = _BAD.search(text)
    if match is None:
        return None
    if match.group(0) == "\t":
        what = "a tab"
    elif match.group(0) in "\r\n":
        what = "a line break"
    else:
        what = f"{len(match.group(0))} consecutive spaces"
    return (
        f"has {what} at character {match.start() + 1}; WhatsApp refuses line breaks, tabs "
        f"and more than {MAX_SPACES} consecutive spaces in template parameters (132018)"
    )


def literal_problem(param: str) -> str | None:
    """The rule applied to a flow file's parameter with its placeholders taken out (a
    placeholder's value is checked at enrollment); None when it is fine."""
    literal = _PLACEHOLDER.sub(lambda m: m.group(0)[0] if len(m.group(0)) == 2 else "x", param)
    return value_problem(literal)


def sanitize(text: str) -> str:
    """`text` made acceptable: line breaks and tabs become spaces, runs of more than 4
    spaces shrink to 4. Used at send time only; enrollment rejects such values first."""
    if _BAD.search(text) is None:
        return text  # the usual case, at a third of the cost of the rewrite below
    text = text.replace("\r\n", " ").translate({ord("\n"): " ", ord("\r"): " ", ord("\t"): " "})
    return _RUN.sub(" " * MAX_SPACES, text)


def field_value_problems(
    params: Iterable[str], values: Mapping[str, object]
) -> list[tuple[str, str]]:
    """(field, reason) for each value in `values` that a template text parameter in
    `params` would carry and that breaks Meta's rule; [] when all are fine."""
    used: dict[str, None] = {}
    for param in params:
        for name in placeholders_in(param):
            used.setdefault(name, None)
    problems = []
    for name in used:
        value = values.get(name)
        if isinstance(value, str) and (why := value_problem(value)) is not None:
            problems.append((name, why))
    return problems
