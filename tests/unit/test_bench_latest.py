"""The README's benchmark table keeps the latest run of each scenario (bench/latest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import latest, report


def _row(scenario: str, backend: str, run: str = "r", **kw: Any) -> dict[str, Any]:
    return {"scenario": scenario, "run": run, "system": "dripline", "backend": backend, **kw}


def _doc(
    scenarios: list[Any], rows: list[dict[str, Any]], checks: list[dict[str, Any]], **kw: Any
) -> dict[str, Any]:
    return {
        "date": kw.get("date", "2026-12-01"),
        "finished_at": kw.get("finished_at", "2026-12-01T01:00:00+00:00"),
        "command": kw.get("command", "python -m bench"),
        "duration_s": 10.0,
        "machine": {"cores": 2},
        "scenarios": scenarios,
        "rows": rows,
        "checks": checks,
        "errors": kw.get("errors", {}),
    }


def test_rows_and_targets_go_to_the_scenario_whose_run_made_them() -> None:
    # Scenario 6's comparisons run inside 1 and 3; the planner's targets name theirs.
    assert latest.row_origin("6 (3)", "1") == "3"
    assert latest.row_origin("11", "1") == "11"
    assert latest.row_origin("planner", "5") == "5"
    assert (
        latest.check_origin({"scenario": "6", "target": "x lag p99 (scenario 3, PG)"}, "1") == "3"
    )
    assert (
        latest.check_origin({"scenario": "planner", "target": "within 5% (scenario 11)"}, "1")
        == "11"
    )
    assert latest.check_origin({"scenario": "14", "target": "first send"}, "1") == "14"


def test_an_origin_recorded_by_the_run_wins_over_the_inference() -> None:
    doc = _doc([1, 3], [_row("6 (1)", "postgres", origin="3")], [])
    assert list(latest.entries(doc)) == ["3 postgres"]


def test_a_failed_or_quick_free_scenario_is_not_recorded() -> None:
    doc = _doc([1, 3], [_row("1", "sqlite"), _row("3", "sqlite")], [], errors={"3": "boom"})
    assert list(latest.entries(doc)) == ["1 sqlite"]
    assert latest.entries(_doc(["soak"], [_row("1", "sqlite")], [])) == {}


def test_a_run_on_one_backend_replaces_only_that_backends_entry() -> None:
    both = latest.entries(_doc([15], [_row("15", "sqlite"), _row("15", "postgres")], [], date="d1"))
    store = latest.merge({}, both)
    assert list(store) == ["15 postgres+sqlite"]
    sqlite_only = latest.entries(_doc([15], [_row("15", "sqlite")], [], date="d2"))
    store = latest.merge(store, sqlite_only)
    # The run on both is not covered by the SQLite run: both stay, the newer shown too.
    assert sorted(store) == ["15 postgres+sqlite", "15 sqlite"]
    again = latest.entries(
        _doc([15], [_row("15", "sqlite"), _row("15", "postgres")], [], date="d3")
    )
    store = latest.merge(store, again)
    assert list(store) == ["15 postgres+sqlite"]
    assert store["15 postgres+sqlite"]["run"]["date"] == "d3"


def test_a_label_keeps_a_variant_beside_the_plain_entry() -> None:
    plain = latest.entries(_doc([15], [_row("15", "postgres")], []))
    off = latest.entries(_doc([15], [_row("15", "postgres")], []), label="autovacuum off")
    store = latest.merge(latest.merge({}, plain), off)
    assert sorted(store) == ["15 postgres", "15 postgres [autovacuum off]"]


def test_render_puts_each_run_over_its_own_rows_and_targets(tmp_path: Path) -> None:
    first = _doc(
        [1, 3],
        [_row("1", "sqlite", run="backlog"), _row("3", "sqlite", run="steady")],
        [{"scenario": "3", "target": "lag p99 < 100 ms", "value": "70 ms", "met": True}],
        command="python -m bench",
    )
    second = _doc(
        [11],
        [_row("11", "postgres", run="bound")],
        [{"scenario": "11", "target": ">= 0.95", "value": "0.94", "met": False}],
        command="python -m bench --scenario 11",
        finished_at="2026-12-01T02:00:00+00:00",
    )
    path, readme = tmp_path / "latest.json", tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.START}\nold\n{report.END}\n\nafter\n")
    assert latest.record(first, path=path, readme=readme) == ["1 sqlite", "3 sqlite"]
    assert latest.record(second, path=path, readme=readme) == ["11 postgres"]
    text = readme.read_text()
    assert "old" not in text and text.endswith("after\n")
    a = text.index("Scenarios 1, 3: 2026-12-01 with `python -m bench`")
    b = text.index("Scenario 11: 2026-12-01 with `python -m bench --scenario 11`")
    assert a < text.index("| 3 | steady |") < b < text.index("| 11 | bound |")
    assert "- 11: >= 0.95: 0.94 (**missed**)" in text
    assert "- 3: lag p99 < 100 ms: 70 ms (met)" in text
    assert list(latest.load(path)) == ["1 sqlite", "3 sqlite", "11 postgres"]
