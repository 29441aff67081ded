"""`dripline results FLOW` and `dripline export` as a user runs them (the console script
in a subprocess), on a SQLite database holding typed answers written through the store
contract as the inbox processor writes them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

from dripline.store import Enrollment, open_store
from tests.e2e.test_cli_enroll import assert_one_line_error, run
from tests.integration.test_store_results import T0, ask, reply, statuses

FLOW = """
name: poll
steps:
  - id: plan
    text: "Which plan? Reply pro or basic"
    wait_for_reply: true
    reply_timeout: 1h
  - id: score
    text: "From 0 to 10?"
    wait_for_reply: true
    reply_timeout: 1h
"""


async def _fill(url: str) -> None:
    store = await open_store(url)
    try:
        a, b = (
            r.id
            for r in await store.enroll(
                [
                    Enrollment("+14155550101", "poll", name="=cmd", at=T0),
                    Enrollment("+14155550102", "poll", at=T0),
                ],
                T0,
            )
        )
        wa = await ask(store, a, 0, T0)
        wb = await ask(store, b, 0, T0)
        await ask(store, a, 1, T0)
        await statuses(store, (wa, "read"), (wb, "delivered"))
        async with store.webhook_transaction() as tx:
            await tx.insert_inbound(
                [
                    reply(a, 0, 30, None, valid=False),
                    reply(a, 0, 60, "option", option="pro"),
                    reply(b, 0, 120, "text"),
                    reply(a, 1, 90, "number", number=9),
                ]
            )
    finally:
        await store.close()


def _setup(tmp_path: Path, sqlite_url: str) -> list[str]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "poll.yaml").write_text(FLOW)
    asyncio.run(_fill(sqlite_url))
    return ["--database-url", sqlite_url, "--flows-dir", str(flows)]


def test_results_table_and_json(tmp_path: Path, sqlite_url: str) -> None:
    args = _setup(tmp_path, sqlite_url)
    shown = run("results", "poll", *args, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "poll: 2 conversations"
    assert lines[2].split() == [
        "0",
        "plan",
        "text",
        "2",
        "2",
        "1",
        "2",
        "100.0%",
        "1m",
        "30s",
        "33.3%",
    ]
    assert lines[3].split()[:7] == ["1", "score", "text", "1", "0", "0", "1"]
    as_json = run("results", "poll", *args, "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    plan = body["questions"][0]
    assert plan["funnel"] == {"sent": 2, "delivered": 2, "read": 1, "answered": 2}
    assert [(o["id"], o["count"]) for o in plan["options"]] == [("pro", 1)]
    assert body["questions"][1]["numbers"] == [{"value": 9, "count": 1}]


def test_results_errors_are_one_line(tmp_path: Path, sqlite_url: str) -> None:
    args = _setup(tmp_path, sqlite_url)
    assert_one_line_error(run("results", "nope", *args, cwd=tmp_path), "unknown flow 'nope'")
    missing = ["--database-url", f"sqlite:///{tmp_path / 'none.db'}", *args[2:]]
    assert_one_line_error(run("results", "poll", *missing, cwd=tmp_path), "no database at")


def test_export_has_typed_columns_in_csv_and_json(tmp_path: Path, sqlite_url: str) -> None:
    args = _setup(tmp_path, sqlite_url)
    out = run("export", "-", "--flow", "poll", *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["name"], r["plan"], r["score"]) for r in rows] == [
        ("'=cmd", "pro", "9"),  # the option id, not the typed text; the number as written
        ("", "body", ""),
    ]
    as_json = run("export", "-", "--flow", "poll", "--json", *args, cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    records = json.loads(as_json.stdout)
    assert [(r["name"], r["answers"]) for r in records] == [
        ("=cmd", {"plan": "pro", "score": 9}),
        (None, {"plan": "body", "score": None}),
    ]
