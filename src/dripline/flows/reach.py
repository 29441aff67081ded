"""Which steps can fall outside WhatsApp's 24-hour window without a template. Pure.

`dripline flows check` warns about them: outside the window only templates are
delivered, so such a step fails at send time (dispatcher/window.py), and a text reminder
is skipped. A step can be due outside the window when:

- it is the first step (it usually reaches someone who never wrote to the business);
- it follows a step whose reply timeout can pass with `on_timeout: continue` (no reply:
  the user's last message is older than the whole wait);
- the time since the user's last possible reply (the previous answered step) adds up to
  24 hours or more: `after` delays of the steps sent since, plus quiet hours that can
  hold a send back.

A step whose own message is a template, or that has a `fallback` (its own or the
flow's), is never refused for the window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dripline.flows.durations import format_duration
from dripline.flows.model import FlowSpec, Loc, QuietHours, StepSpec

__all__ = ["window_warnings"]

WINDOW = timedelta(hours=24)


def _quiet_length(hours: QuietHours | None) -> timedelta:
    """The longest a quiet window can hold a send back."""
    if hours is None or hours.is_off:
        return timedelta(0)
    day = datetime(2000, 1, 1)
    start = datetime.combine(day, hours.start)
    end = datetime.combine(day, hours.end)
    return (end - start) % WINDOW


def window_warnings(spec: FlowSpec) -> list[tuple[Loc, str]]:
    """(field location, message) for each step or reminder that can be due outside the
    24-hour window with nothing but text to send."""
    out: list[tuple[Loc, str]] = []
    outside = True  # whether the previous step could be due outside the window
    why = "the first step reaches users who may never have written to the business number"
    since = timedelta(0)  # the longest time since the user's last possible reply
    previous: StepSpec | None = None
    for index, step in enumerate(spec.steps):
        hold = _quiet_length(step.quiet_hours or spec.quiet_hours)
        if previous is not None:
            if previous.wait_for_reply:
                since = step.after + hold
                outside = previous.on_timeout == "continue"
                why = f"it follows steps[{index - 1}]'s reply timeout (on_timeout: continue)"
            else:
                since += step.after + hold
            if not outside and since >= WINDOW:
                outside = True
                why = f"it can come {format_duration(since)} after the user's last reply"
        templated = step.template is not None or (step.fallback or spec.fallback) is not None
        if outside and not templated:
            out.append(
                (
                    ("steps", index),
                    f"can be due outside WhatsApp's 24-hour window ({why}) and has only text: "
                    "add a `fallback:` template to the step (or to the flow), or the "
                    "conversation fails there",
                )
            )
        reminder = step.reminder
        if reminder is not None and reminder.template is None:
            late = since + reminder.after + _quiet_length(step.quiet_hours or spec.quiet_hours)
            if outside or late >= WINDOW:
                out.append(
                    (
                        ("steps", index, "reminder"),
                        "a text reminder is not sent outside the 24-hour window (where the "
                        "question went as a template); give the reminder a `template` to "
                        "remind such users",
                    )
                )
        previous = step
    return out
