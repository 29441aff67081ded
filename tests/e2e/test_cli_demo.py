"""`dripline demo` as a user runs it (the console script in a subprocess), kept small:
no backlog, a dozen simulated users in the answers phase. `--json` is one document on
stdout with the free-trial flow's results; a second run recreates a database that holds
only demo data, and a database with someone's free-trial conversation is refused."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_cli_enroll import DRIPLINE, assert_one_line_error
from tests.fixtures.clocked import REPO

USERS = 12


def demo(url: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPLINE_")}
    env.update(COLUMNS="200", NO_COLOR="1", DRIPLINE_FLOWS_DIR=str(REPO / "flows"))
    args = ["--conversations", "0", "--stream", "0", "--database-url", url, *extra]
    # Far below the throughput run's 900 s budget: a demo with nothing to send must
    # stop once the answers phase is done, not wait out the budget.
    return subprocess.run(
        [DRIPLINE, "demo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.mark.slow
def test_demo_json_holds_the_free_trial_results(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    proc = demo(url, tmp_path, "--answers", str(USERS), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # progress went to stderr
    answers = doc["answers"]
    assert answers["time_compressed"] is True
    assert answers["users"] == USERS
    results = answers["results"]
    assert results["flow"] == "free-trial" and results["conversations"] == USERS
    score = next(q for q in results["questions"] if q["id"] == "score")
    assert score["funnel"]["sent"] == USERS
    assert "time compressed" in proc.stderr

    # Again on the same file: it holds only demo data, so it is recreated.
    again = demo(url, tmp_path, "--answers", "3")
    assert again.returncode == 0, again.stderr
    assert "recreating" in again.stdout
    assert "free-trial: 3 conversations" in again.stdout  # the results table, at the end
    assert again.stdout.rstrip().splitlines()[-1].startswith("The same table again")


@pytest.mark.slow
def test_demo_refuses_a_database_with_someone_elses_free_trial(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPLINE_")}
    env["DRIPLINE_FLOWS_DIR"] = str(REPO / "flows")
    enroll = [DRIPLINE, "enroll", "--flow", "free-trial", "--phone", "+14155550100"]
    subprocess.run([*enroll, "--database-url", url], cwd=tmp_path, env=env, check=True, timeout=60)
    proc = demo(url, tmp_path, "--answers", "3")
    assert_one_line_error(proc, "holds conversations of other flows (free-trial)")
    assert (tmp_path / "demo.db").exists()
