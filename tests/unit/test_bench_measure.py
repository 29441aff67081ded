"""The benchmark's counting: what is a duplicate, what is a later step of the flow."""

from __future__ import annotations

from bench.measure import Row, from_record


def _msg(to: str, body: str, t: float) -> dict[str, object]:
    return {"to": to, "body": body, "received_wall": t, "arrived_wall": t}


def _row() -> Row:
    return Row(scenario="t", run="t", system="dripline", backend="sqlite")


def test_a_later_step_to_the_same_recipient_is_not_a_duplicate() -> None:
    received = [_msg("1", "demo_hello", 1.0), _msg("2", "demo_hello", 2.0)]
    received.append(_msg("1", "demo_middle", 3.0))  # the flow's next step, 10 minutes on
    row = from_record(_row(), received, {"1": 0.5, "2": 0.5}, {}, bound_per_s=10.0)
    assert (row.messages, row.duplicates, row.missing) == (2, 0, 0)
    assert row.extra["later_steps"] == 1
    assert row.throughput_per_s == 1.0  # first messages only: 1 more in 1 s


def test_the_same_message_twice_is_a_duplicate() -> None:
    received = [_msg("1", "demo_hello", 1.0), _msg("1", "demo_hello", 1.5)]
    row = from_record(_row(), received, {"1": 0.5, "2": 0.5}, {}, bound_per_s=10.0)
    assert (row.messages, row.duplicates, row.missing) == (1, 1, 1)
    assert "later_steps" not in row.extra
