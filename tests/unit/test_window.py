"""The 24-hour window decision: what goes out for a due step (dispatcher/window.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dripline.dispatcher.window import Choice, decide, window_open
from dripline.flows import TemplateMessage, TextMessage, YamlFlow, parse_flow_text

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


@dataclass(frozen=True)
class Conv:
    id: int = 1
    phone: str = "+4915112345678"
    flow: str = "t"
    step: int = 0
    purpose: str = "question"
    state: str = "pending"
    attempts: int = 0
    name: str | None = "Ana"
    timezone: str | None = None
    fields: Mapping[str, Any] | None = field(default_factory=dict)
    last_inbound_at: datetime | None = None


def _flow(text: str) -> YamlFlow:
    loaded = parse_flow_text(text, "t.yaml", "t")
    return YamlFlow(loaded.spec, loaded.source)


FLOW = _flow(
    """
steps:
  - text: "Hi {name}"          # step 0: text, own template
    wait_for_reply: true
    reply_timeout: 1d
    reminder: {after: 4h, text: "Still there?"}
    fallback: {name: welcome, body_params: ["{name}"]}
  - text: "No template here"   # step 1: text, no template at all
  - template: {name: checkin}  # step 2: a template itself
    wait_for_reply: true
    reply_timeout: 1d
    reminder: {after: 2h, template: {name: nudge}}
"""
)

CASES = [
    # (step, purpose, last inbound, expected choice, sent purpose, sent template name)
    (0, "question", None, Choice.SEND, "fallback", "welcome"),
    (0, "question", NOW - 2 * H, Choice.SEND, "question", None),
    (0, "question", NOW - 23 * H, Choice.SEND, "question", None),
    (0, "question", NOW - 23 * H - timedelta(minutes=55), Choice.SEND, "fallback", "welcome"),
    (0, "question", NOW - 30 * H, Choice.SEND, "fallback", "welcome"),
    (0, "reminder", NOW - 1 * H, Choice.SEND, "reminder", None),
    (0, "reminder", None, Choice.SKIP, "reminder", None),
    (0, "reminder", NOW - 25 * H, Choice.SKIP, "reminder", None),
    (0, "fallback", NOW - 1 * H, Choice.SEND, "fallback", "welcome"),
    (1, "question", NOW - 1 * H, Choice.SEND, "question", None),
    (1, "question", None, Choice.FAIL, "question", None),
    (1, "question", NOW - 48 * H, Choice.FAIL, "question", None),
    (2, "question", None, Choice.SEND, "question", "checkin"),
    (2, "reminder", None, Choice.SEND, "reminder", "nudge"),
]


@pytest.mark.parametrize(("step", "purpose", "seen", "choice", "sent", "template"), CASES)
def test_decide(
    step: int,
    purpose: str,
    seen: datetime | None,
    choice: Choice,
    sent: str,
    template: str | None,
) -> None:
    conv = Conv(step=step, purpose=purpose, last_inbound_at=seen)
    got = decide(conv, FLOW, NOW, window_s=24 * 3600, margin_s=600)
    assert got.choice is choice
    assert got.purpose == sent
    if choice is Choice.SEND:
        if template is None:
            assert isinstance(got.message, TextMessage)
        else:
            assert isinstance(got.message, TemplateMessage)
            assert got.message.name == template
    else:
        assert got.message is None
        assert got.reason and "window closed" in got.reason


def test_fail_reason_says_what_to_add() -> None:
    got = decide(Conv(step=1), FLOW, NOW, window_s=86400, margin_s=0, step_label="step 2 (q2)")
    assert got.reason is not None
    assert "never written" in got.reason
    assert "step 2 (q2)" in got.reason
    assert "`fallback:`" in got.reason


def test_flow_level_fallback_covers_every_step() -> None:
    flow = _flow(
        """
fallback: {name: generic}
steps:
  - text: "One"
  - text: "Two"
"""
    )
    got = decide(Conv(step=1), flow, NOW, window_s=86400, margin_s=0)
    assert got.choice is Choice.SEND and got.purpose == "fallback"
    assert isinstance(got.message, TemplateMessage) and got.message.name == "generic"


@pytest.mark.parametrize(
    ("age_s", "margin_s", "is_open"),
    [
        (0, 0, True),
        (86_399, 0, True),
        (86_400, 0, False),
        (86_000, 600, False),
        (85_799, 600, True),
        (-5, 0, True),  # a clock slightly behind the webhook's timestamp
    ],
)
def test_window_open_edges(age_s: float, margin_s: float, is_open: bool) -> None:
    seen = NOW - timedelta(seconds=age_s)
    assert window_open(seen, NOW, window_s=86_400, margin_s=margin_s) is is_open
    assert window_open(None, NOW, window_s=86_400, margin_s=margin_s) is False
