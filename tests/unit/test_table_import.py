"""Where a row of another scheduler's table lands in a dripline flow (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dripline.errors import InputError
from dripline.flows import load_flows
from dripline.table_import import Planned, Skipped, check_columns, plan_row

FLOW = load_flows(Path(__file__).resolve().parents[2] / "flows").get("free-trial")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def plan(**row: Any) -> Planned:
    result = plan_row({"phone": "+14155550100", **row}, FLOW, NOW, number=1)
    assert isinstance(result, Planned), result
    return result


CASES = [
    # (row, (step, state, purpose, next_send_at))
    ({"step": 0, "next_send_at": NOW + H}, (0, "pending", "question", NOW + H)),
    ({"step": "setup", "next_send_at": NOW - H}, (1, "in_progress", "question", NOW - H)),
    ({"step": "2", "next_send_at": (NOW + H).replace(tzinfo=None)},
     (2, "in_progress", "question", NOW + H)),  # naive means UTC
    ({"step": 1, "next_send_at": "2026-03-02T09:00:00+01:00"},
     (1, "in_progress", "question", datetime(2026, 3, 2, 8, tzinfo=UTC))),
    # Waiting for an answer: the flow's own transition from when it was asked. The
    # reminder (4 h) falls at 06:00 in San Francisco (+1 415): quiet hours hold it to 08:00.
    ({"step": 0, "asked_at": NOW - 2 * H}, (0, "awaiting_reply", "reminder", NOW + 4 * H)),
    ({"step": 2}, (2, "awaiting_reply", "timeout", NOW + 24 * H)),  # asked now
    ({"step": 2, "state": "awaiting_reply", "next_send_at": NOW + 5 * H},
     (2, "awaiting_reply", "timeout", NOW + 5 * H)),
]  # fmt: skip


@pytest.mark.parametrize(("row", "expected"), CASES)
def test_rows_land_at_their_step(row: dict[str, Any], expected: tuple[Any, ...]) -> None:
    item = plan(**row).item
    assert (item.step, item.state, item.purpose, item.next_send_at) == expected


def test_other_columns_become_fields_and_names_carry_over() -> None:
    p = plan(step=0, key=42, name=" Ann ", timezone="Europe/Paris", plan="Gold", empty=None)
    assert (p.key, p.step_id, p.item.name, p.item.timezone) == ("42", "goal", "Ann", "Europe/Paris")
    assert dict(p.item.fields) == {"plan": "Gold"}


@pytest.mark.parametrize("state", ["completed", "failed", "opted_out", "cancelled"])
def test_finished_rows_are_skipped(state: str) -> None:
    result = plan_row({"phone": "bad", "step": 0, "state": state, "key": 7}, FLOW, NOW, number=3)
    assert result == Skipped("7", f"state {state}")


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        ({"step": 0, "state": "active"}, "map the old values in the query"),
        ({"step": 7}, "outside flow free-trial's steps 0 to 6"),
        ({"step": "nope"}, "neither a step index nor a step id"),
        ({"step": True}, "neither a step index"),
        ({"step": 0, "next_send_at": "soon"}, "next_send_at 'soon' is not a timestamp"),
        ({"step": 0, "timezone": "Mars/Base"}, "IANA"),
        ({"step": 0, "phone": "12"}, "phone"),
    ],
)
def test_bad_rows_name_the_row_and_the_column(row: dict[str, Any], phrase: str) -> None:
    with pytest.raises(InputError, match="row 2 \\(key k\\)") as caught:
        plan_row({"phone": "+14155550100", "key": "k", **row}, FLOW, NOW, number=2)
    assert phrase in str(caught.value)


def test_a_query_without_phone_or_step_is_refused() -> None:
    check_columns(["phone", "step", "extra"])
    with pytest.raises(InputError, match="no phone, step column"):
        check_columns(["id"])
