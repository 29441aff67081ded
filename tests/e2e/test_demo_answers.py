"""`dripline demo`'s answers phase (issue 15, item 8): simulated users go through the
shipped free-trial flow on a compressed clock, answering by signed webhooks, and the
results table the demo ends with is what they answered.

The expected counts are computed here from what each simulated user sent (`said`: the
option, number or text they meant, valid or not), independently of the store's
aggregate and of `dripline.results`: per question, the replies and invalid ones, the
users with a valid answer, the count per option of each user's first valid answer, the
NPS of the scores, and the branch (only detractors are asked what to fix, only
promoters for a review). `dripline results free-trial --json` then reads the same
numbers back from the database.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dripline.cli import app
from dripline.demo_answers import AnswersOptions, run_answers
from dripline.demo_users import Said, SimulatedUser
from dripline.results_report import render
from tests.fixtures.clocked import REPO

USERS = 40
STEPS = ("goal", "setup", "feature", "score", "fix", "review", "upgrade")


def first_valid(people: list[SimulatedUser]) -> dict[str, list[Said]]:
    """Per question id: each user's first valid answer (what results count)."""
    out: dict[str, list[Said]] = {qid: [] for qid in STEPS}
    for user in people:
        seen: set[int] = set()
        for said in user.said:
            if said.valid and said.step not in seen:
                seen.add(said.step)
                out[STEPS[said.step]].append(said)
    return out


def expected(people: list[SimulatedUser]) -> dict[str, dict[str, Any]]:
    answers = first_valid(people)
    replies = Counter(STEPS[s.step] for u in people for s in u.said)
    invalid = Counter(STEPS[s.step] for u in people for s in u.said if not s.valid)
    out: dict[str, dict[str, Any]] = {}
    for qid in STEPS:
        options = Counter(s.option for s in answers[qid] if s.option is not None)
        out[qid] = {
            "answered": len(answers[qid]),
            "replies": replies[qid],
            "invalid": invalid[qid],
            "options": dict(options),
        }
    scores = [s.number for s in answers["score"] if s.number is not None]
    promoters = sum(n >= 9 for n in scores)
    detractors = sum(n <= 6 for n in scores)
    out["score"]["nps"] = {
        "score": round(100 * (promoters - detractors) / len(scores), 1),
        "promoters": promoters,
        "passives": len(scores) - promoters - detractors,
        "detractors": detractors,
        "responses": len(scores),
    }
    return out


def seen(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for q in results["questions"]:
        out[q["id"]] = {
            "answered": q["funnel"]["answered"],
            "replies": q["replies"],
            "invalid": q["invalid"],
            "options": {o["id"]: o["count"] for o in q["options"] if o["count"]},
        }
        if q["nps"] is not None:
            out[q["id"]]["nps"] = q["nps"]
    return out


@pytest.mark.slow
async def test_the_demo_results_are_what_the_simulated_users_answered(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    report = await run_answers(url, REPO / "flows", AnswersOptions(users=USERS, seed=3))
    people = report.people
    want = expected(people)
    doc = report.as_dict()
    assert doc["time_compressed"] is True and doc["simulated_days"] > 4
    results = doc["results"]
    assert results["flow"] == "free-trial"
    assert results["conversations"] == USERS
    assert seen(results) == want
    # The branch after the score: only detractors are asked what to fix, only promoters
    # for a review.
    funnel = {q["id"]: q["funnel"] for q in results["questions"]}
    nps = want["score"]["nps"]
    assert funnel["fix"]["sent"] == nps["detractors"] > 0
    assert funnel["review"]["sent"] == nps["promoters"] > 0
    # Every way of answering happened: taps on buttons and list rows, typed answers,
    # invalid answers (re-asked), and questions nobody answered.
    assert {"button_reply", "list_reply", "text"} <= set(report.replies_by_kind)
    assert sum(v["invalid"] for v in want.values()) > 0
    assert any(funnel[q]["sent"] > want[q]["answered"] for q in STEPS)
    # The table the demo prints is `dripline results`'s, from the database.
    table = render(report.results)
    assert f"free-trial: {USERS} conversations" in table
    assert f"NPS {nps['score']:g}: {nps['promoters']} promoters" in table
    out = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        [
            "results",
            "free-trial",
            "--json",
            "--database-url",
            url,
            "--flows-dir",
            str(REPO / "flows"),
        ],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    assert seen(json.loads(out.stdout)) == want
