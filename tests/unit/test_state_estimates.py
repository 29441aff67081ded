"""State counts from a table's statistics (`dripline status` on big PostgreSQL tables)."""

from __future__ import annotations

from dripline.store.computed import state_estimates
from dripline.store.types import CONVERSATION_STATES


def test_rows_times_each_share_and_zero_for_unsampled_states() -> None:
    got = state_estimates(10_000_000.0, ["completed", "in_progress"], [0.8, 0.19], 1_000_000)
    assert got is not None
    assert set(got) == set(CONVERSATION_STATES)
    assert (got["completed"], got["in_progress"], got["pending"]) == (8_000_000, 1_900_000, 0)


def test_no_estimate_for_a_small_table() -> None:
    assert state_estimates(999_999.0, ["completed"], [1.0], 1_000_000) is None


def test_no_estimate_without_statistics() -> None:
    assert state_estimates(-1.0, None, None, 0) is None  # never analyzed (PostgreSQL 14+)
    assert state_estimates(None, None, None, 0) is None
    assert state_estimates(5e6, None, None, 0) is None  # analyzed, but no shares for state


def test_a_value_that_is_not_a_state_is_ignored() -> None:
    got = state_estimates(100.0, ["pending", "bogus"], [0.5, 0.5], 0)
    assert got is not None and got["pending"] == 50 and "bogus" not in got
