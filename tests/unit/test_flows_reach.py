"""`dripline flows check`'s window warnings: steps that can be due outside the 24-hour
window with only text (flows/reach.py)."""

from __future__ import annotations

import pytest

from dripline.flows import parse_flow_text
from dripline.flows.reach import window_warnings


def warned(text: str) -> list[str]:
    spec = parse_flow_text(text, "t.yaml", "t").spec
    return [".".join(str(p) for p in loc) for loc, _ in window_warnings(spec)]


WAIT = "wait_for_reply: true\n    reply_timeout: 1d"

CASES = [
    # the first step always can be outside the window
    ("steps:\n  - text: a\n", ["steps.0"]),
    ("steps:\n  - text: a\n    fallback: {name: t}\n", []),
    ("fallback: {name: t}\nsteps:\n  - text: a\n  - text: b\n", []),
    ("steps:\n  - template: {name: t}\n", []),
    # after a reply: inside the window unless the delay reaches 24 h
    (f"steps:\n  - template: {{name: t}}\n    {WAIT}\n  - text: b\n    after: 2h\n", []),
    (f"steps:\n  - template: {{name: t}}\n    {WAIT}\n  - text: b\n    after: 1d\n", ["steps.1"]),
    # quiet hours can hold it back: 16 h + 10 h of quiet
    (
        "quiet_hours: {start: '21:00', end: '07:00'}\n"
        f"steps:\n  - template: {{name: t}}\n    {WAIT}\n  - text: b\n    after: 16h\n",
        ["steps.1"],
    ),
    # after a timeout that continues: the user may not have written for a day
    (
        f"steps:\n  - template: {{name: t}}\n    {WAIT}\n    on_timeout: continue\n  - text: b\n",
        ["steps.1"],
    ),
    # steps that wait for nothing add up their delays since the last reply
    (
        f"steps:\n  - template: {{name: t}}\n    {WAIT}\n  - text: b\n    after: 20h\n"
        "  - text: c\n    after: 5h\n",
        ["steps.2"],
    ),
    # a step after an outside step that waits for nothing is outside too
    ("steps:\n  - template: {name: t}\n  - text: b\n    after: 1m\n", ["steps.1"]),
    # text reminders of a step that can be outside, or that come too late
    (
        f"steps:\n  - template: {{name: t}}\n    {WAIT}\n    reminder: {{after: 4h, text: r}}\n",
        ["steps.0.reminder"],
    ),
    (
        f"steps:\n  - template: {{name: t}}\n    {WAIT}\n"
        "    reminder: {after: 4h, template: {name: r}}\n",
        [],
    ),
    (
        f"steps:\n  - template: {{name: t}}\n    {WAIT}\n  - text: b\n    after: 1h\n"
        "    wait_for_reply: true\n    reply_timeout: 2d\n    reminder: {after: 23h, text: r}\n",
        ["steps.1.reminder"],
    ),
    (
        f"steps:\n  - template: {{name: t}}\n    {WAIT}\n  - text: b\n    after: 1h\n"
        "    wait_for_reply: true\n    reply_timeout: 2d\n    reminder: {after: 4h, text: r}\n",
        [],
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_window_warnings(text: str, expected: list[str]) -> None:
    assert warned(text) == expected


def test_warnings_name_file_line_and_what_to_add() -> None:
    loaded = parse_flow_text("steps:\n  - text: a\n  - text: b\n", "f.yaml", "f")
    first = loaded.warnings[0]
    assert first.startswith("f.yaml:2: steps[0]: can be due outside WhatsApp's 24-hour window")
    assert "`fallback:`" in first
