"""Smoke run of every benchmark scenario at tiny sizes (`python -m bench --quick`).

Asserts the report is complete and correct: every scenario present, every field filled,
counts right, no duplicates, nothing missing. Never timings: those belong to
`make bench`, not CI.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

MEASURED_FIELDS = (
    "messages",
    "wall_s",
    "throughput_per_s",
    "bound_per_s",
    "ratio_to_bound",
    "lag_p50_ms",
    "lag_p95_ms",
    "lag_p99_ms",
    "lag_max_ms",
    "duplicates",
    "missing",
    "cpu_ms_per_msg",
    "peak_rss_mb",
    "db_connections",
)


# Session scope, and shared between xdist's workers: this file's tests can land on both
# (`make test`'s group markers do not reach xdist's worker hook in time), and each
# worker's session fixture then made the whole `--quick` run (about 75 s) at the same
# time (`--durations`: 75.6 and 76.5 s of setup). The first worker to take the lock runs
# it and leaves the report; the other reads it.
@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> dict[str, Any]:
    shared = tmp_path_factory.getbasetemp().parent  # the same for every worker of a run
    saved = shared / "bench-smoke-report.json"
    with (shared / "bench-smoke.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if saved.exists():
            shared_doc: dict[str, Any] = json.loads(saved.read_text())
            return shared_doc
        doc = _run_quick_bench(tmp_path_factory.mktemp("bench"), postgres_server_url)
        saved.write_text(json.dumps(doc))
        return doc


def _run_quick_bench(out: Path, postgres_server_url: str) -> dict[str, Any]:
    env = dict(os.environ, DRIPLINE_BENCH_POSTGRES_URL=postgres_server_url)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--json", "--no-readme"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=280,  # a safety bound (scenarios 20 and 21 added ~3 short runs)
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    doc: dict[str, Any] = json.loads(proc.stdout)
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"{doc['date']}-quick.json", f"{doc['date']}-quick.md"]
    return doc


def test_every_scenario_reported(report: dict[str, Any]) -> None:
    assert report["errors"] == {}
    assert report["quick"] is True
    scenarios = {r["scenario"] for r in report["rows"]}
    assert scenarios == {"1", "2", "3", "4", "5", "6 (1)", "6 (3)", "7", "20", "21"}
    machine = report["machine"]
    for key in ("cores", "cpu_model", "python", "postgresql", "sqlite"):
        assert machine[key]
    assert report["checks"]


def test_dispatcher_runs_complete_and_exact(report: dict[str, Any]) -> None:
    runs = [r for r in report["rows"] if r["measured"] and r["system"] == "dripline"]
    # 1: two backends + seed-cron for real; 2: two; 3: two; 4: two; 5: two; 20: two;
    # 21: one (their controls only in full runs).
    assert len(runs) == 14
    for r in runs:
        assert r["duplicates"] == 0, r
        assert r["missing"] == 0, r
        assert r["messages"] > 0
        for name in MEASURED_FIELDS:
            assert r[name] is not None, (r["run"], name)
        assert r["extra"]["failed"] == 0
    backlog = [r for r in runs if r["scenario"] == "1"]
    assert {r["backend"] for r in backlog} == {"sqlite", "postgres"}
    assert all(r["messages"] == 400 for r in backlog if "seed" not in r["run"])
    pg = [r for r in runs if r["backend"] == "postgres"]
    assert all(isinstance(r["db_connections"], int) and r["db_connections"] >= 1 for r in pg)
    assert all(r["db_connections"] == "1 file" for r in runs if r["backend"] == "sqlite")
    workers = {r["extra"]["workers"] for r in runs if r["scenario"] == "2"}
    assert workers == {2, 4}


def test_comparisons_present(report: dict[str, Any]) -> None:
    rows = report["rows"]
    pq = [r for r in rows if r["system"] == "procrastinate"]
    assert len(pq) == 2  # scenario 1 and 3, one poll setting in a quick run
    for r in pq:
        assert r["duplicates"] == 0 and r["missing"] == 0
        assert r["cpu_ms_per_msg"] is not None
    seed = [r for r in rows if r["system"] == "seed-cron"]
    assert len(seed) == 2 and all(not r["measured"] for r in seed)
    assert all(r["wall_s"] > 300 for r in seed)  # a 400 backlog takes many 300 s ticks
    assert any(r["system"] == "planner" for r in rows)
    assert report["ratios"]["ratios_scenario_1"]
    assert report["ratios"]["lag_p99_ratios_scenario_3"]


def test_scale_and_webhooks(report: dict[str, Any]) -> None:
    rows = report["rows"]
    scale = [r for r in rows if r["scenario"] == "5"]
    assert len(scale) == 2
    for r in scale:
        assert r["messages"] == 200
        assert r["extra"]["plan"], "the claim's query plan is shown"
        assert r["extra"]["claim_ms_p99"] > 0
        assert "ix_conversations_due" in "\n".join(r["extra"]["plan"])
    hooks = {r["backend"]: r for r in rows if r["scenario"] == "7"}
    assert set(hooks) == {"sqlite", "postgres"}
    for r in hooks.values():
        assert r["extra"]["failed_posts"] == 0
        assert r["extra"]["status_counts"]["_inbox_pending"] == 0
        # Counted from one snapshot: every status applied, every message at 'read'.
        assert r["missing"] == 0, r
        assert r["extra"]["status_counts"]["read"] == r["messages"] // 2


def test_several_numbers(report: dict[str, Any]) -> None:
    """Scenarios 20 and 21: each number's own row, its own messages, from its own number."""
    rows = [r for r in report["rows"] if r["system"] == "dripline, one number"]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {
        (r["scenario"], r["backend"]): [] for r in rows
    }
    for r in rows:
        by[(r["scenario"], r["backend"])].append(r)
        assert r["duplicates"] == 0 and r["missing"] == 0, r
        assert r["extra"]["sent_from_wrong_number"] == 0, r
    assert {k: len(v) for k, v in by.items()} == {
        ("20", "sqlite"): 2,
        ("20", "postgres"): 2,
        ("21", "postgres"): 4,
    }
    # The backlog is mixed in proportion to the limits (300/s and 700/s): 30% and 70%.
    assert [r["messages"] for r in by[("20", "sqlite")]] == [120, 280]
    assert [r["bound_per_s"] for r in by[("20", "sqlite")]] == [300.0, 700.0]
    assert [r["messages"] for r in by[("21", "postgres")]] == [200] * 4
