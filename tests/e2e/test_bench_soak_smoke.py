"""Smoke run of the soak benchmark (`python -m bench --scenario soak --messages 6000`).

Asserts the report is complete and exact: every message sent once, the samples carry
every measure (RSS, open files, database handles, inbox backlog) and the RSS slope is
computed. Never the slope's value or any timing: 6,000 messages are still inside the
allocator's warm-up, and the machine is shared; the full run's figures are in
bench/README.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Enough for a few samples after the warm-up at the fastest rate; the suite's time budget
# is the limit (20,000 took 3.5 minutes on a loaded machine).
MESSAGES = 6_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_soak_smoke_sends_everything_once_and_samples_every_measure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--scenario",
            "soak",
            "--messages",
            str(MESSAGES),
            "--out",
            str(tmp_path),
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=580,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["errors"] == {}
    (row,) = doc["rows"]
    assert (row["scenario"], row["backend"]) == ("soak", "sqlite")
    assert row["messages"] == MESSAGES
    assert row["duplicates"] == 0 and row["missing"] == 0
    extra = row["extra"]
    assert extra["worker_exit"] in (0, -15)
    assert extra["rss_slope_mb_per_100k"] is not None
    assert extra["fit_samples"] >= 3
    samples = extra["samples"]
    assert samples[-1]["accepted"] == MESSAGES
    sending = [s for s in samples if s["accepted"] > 0]
    assert all(s["worker_rss_mb"] > 0 and s["worker_fds"] > 3 for s in sending)
    # On SQLite the pooled connection and the hot-path lane's (store/sqlite_lane.py),
    # each holding the file, its -wal and -shm.
    assert all(1 <= s["worker_db"] <= 6 for s in sending)
    assert any(s["serve_db"] >= 1 for s in sending)
    assert extra["inbox_waiting_last"] == 0  # every status webhook applied at the end
    # The samples were also written as they were taken (a cut-short run keeps them).
    (log,) = tmp_path.glob(f"soak-sqlite-{MESSAGES}-*.jsonl")
    assert len(log.read_text().splitlines()) == len(samples)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".jsonl", ".md"]
