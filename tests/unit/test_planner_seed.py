"""The seed guide's tables, recomputed: right cells reproduced, wrong ones flagged."""

from __future__ import annotations

import pytest

from dripline.planner import comparison_table, summary_table, wave_vs_plimit
from dripline.planner.seed_guide import SEED_COLUMNS, Cell, matches


def cells_by_row(continuous: bool = False) -> dict[tuple[int, int], dict[str, Cell]]:
    table = comparison_table(continuous=continuous)
    return {
        (b, c): {label: cell for (label, _), cell in zip(SEED_COLUMNS, cells, strict=True)}
        for b, c, cells in table.rows
    }


# Which guide cells are wrong for the seed's own cron design.
WRONG = {
    (20, 3): {"1-5 msgs", "30 msgs", "50 msgs"},
    (30, 3): {"1-5 msgs", "50 msgs"},
    (30, 5): {"50 msgs"},
    (30, 10): {"50 msgs"},
    (50, 5): {"30 msgs"},
    (50, 10): {"30 msgs"},
}


def test_exactly_the_wrong_cells_are_flagged() -> None:
    rows = cells_by_row()
    assert set(rows) == set(WRONG)
    for key, cells in rows.items():
        flagged = {label for label, cell in cells.items() if cell.differs}
        assert flagged == WRONG[key], key


def test_right_cells_are_reproduced() -> None:
    rows = cells_by_row()
    seed = rows[(30, 5)]
    assert seed["0 msgs"].high_s == pytest.approx(0.1)
    assert seed["1-5 msgs"].low_s == seed["1-5 msgs"].high_s == pytest.approx(2.6)
    assert seed["30 msgs"].high_s == pytest.approx(15.1)
    assert rows[(30, 10)]["30 msgs"].high_s == pytest.approx(7.6)
    assert rows[(50, 10)]["50 msgs"].high_s == pytest.approx(12.6)


def test_wrong_cells_get_the_right_numbers() -> None:
    rows = cells_by_row()
    # 50 messages at 30/5: the second run, 5 minutes later.
    fifty = rows[(30, 5)]["50 msgs"]
    assert fifty.stated_s == 25
    assert fifty.high_s == pytest.approx(310.1)
    assert fifty.runs == 2
    # 30 messages at 50/5: one run of 6 waves, not 10.
    assert rows[(50, 5)]["30 msgs"].high_s == pytest.approx(15.1)
    # 4-5 messages at 3 concurrent are two waves.
    assert rows[(20, 3)]["1-5 msgs"].high_s == pytest.approx(5.1)
    # 50 at 20/3: three runs.
    assert rows[(20, 3)]["50 msgs"].runs == 3
    assert rows[(20, 3)]["50 msgs"].high_s == pytest.approx(610.1)


def test_continuous_table_needs_no_second_run() -> None:
    rows = cells_by_row(continuous=True)
    fifty = rows[(30, 5)]["50 msgs"]
    assert fifty.stated_s is None
    assert not fifty.differs
    assert fifty.high_s == pytest.approx(25.2, abs=0.1)  # 10 waves, claims pipelined


def test_summary_table_flags_only_the_50_row() -> None:
    rows = {r.messages: r for r in summary_table()}
    assert [n for n, r in rows.items() if r.differs] == [50]
    assert rows[50].result.runs == 2
    assert rows[50].result.waves == rows[50].stated_batches == 10
    assert rows[30].result.drain_s == pytest.approx(15.1)
    assert rows[50].continuous_s < 30


def test_matches_tolerance() -> None:
    assert matches(15, 15.1)
    assert matches(0.1, 0.1)
    assert not matches(25, 15.1)
    assert not matches(14, 15.1)


def test_waves_slower_than_plimit_with_spread() -> None:
    w = wave_vs_plimit(seeds=50)
    assert w["plimit_mean_s"] < w["waves_mean_s"]
