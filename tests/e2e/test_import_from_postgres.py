"""`dripline import --from-postgres`: moving in from the seed scheduler's table, as a user
runs it. The `freeTrials` table lives in the same PostgreSQL database as dripline (as on
Supabase); dry run first, then the import, then the import again (no duplicates)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from dripline.store import Conversation, open_store
from tests.e2e.test_cli_enroll import DRIPLINE, assert_one_line_error

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)

# The seed's table, as its Drizzle schema names it, with what this test needs.
SEED_TABLE = """
CREATE TABLE "freeTrials" (
    id serial PRIMARY KEY,
    "phoneNumber" text NOT NULL,
    name text,
    plan text,
    "conversationState" text NOT NULL,
    "currentQuestion" integer NOT NULL,           -- 1-based
    "nextQuestionScheduledFor" timestamp,         -- UTC, no time zone
    "lastQuestionSentAt" timestamp
)
"""
# The query docs/migrating.md shows.
QUERY = """
SELECT id AS key,
       "phoneNumber" AS phone,
       name,
       plan,
       "currentQuestion" - 1 AS step,
       "nextQuestionScheduledFor" AS next_send_at,
       "lastQuestionSentAt" AS asked_at,
       CASE "conversationState" WHEN 'in_progress' THEN 'in_progress'
                                WHEN 'completed' THEN 'completed'
                                ELSE 'cancelled' END AS state
FROM "freeTrials"
ORDER BY id
"""


def naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


ROWS = [
    # phone, name, plan, state, currentQuestion, next, last sent
    ("+14155550101", "Ann", "Gold", "in_progress", 2, naive(NOW + timedelta(hours=2)), None),
    ("14155550102", "Bob", None, "in_progress", 1, naive(NOW - timedelta(minutes=5)), None),
    ("+1 415 555 0103", "Cy", None, "in_progress", 3, None, naive(NOW - timedelta(hours=3))),
    ("+14155550104", "Di", None, "completed", 5, None, naive(NOW - timedelta(days=2))),
]


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def seed(url: str, rows: Sequence[tuple[object, ...]]) -> None:
    conn = await asyncpg.connect(dsn(url))
    try:
        await conn.execute(SEED_TABLE)
        await conn.executemany(
            'INSERT INTO "freeTrials" ("phoneNumber", name, plan, "conversationState", '
            '"currentQuestion", "nextQuestionScheduledFor", "lastQuestionSentAt") '
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            rows,
        )
    finally:
        await conn.close()


def conversations(url: str) -> list[Conversation]:
    async def go() -> list[Conversation]:
        store = await open_store(url)
        try:
            return await store.list_conversations(limit=100)
        finally:
            await store.close()

    return asyncio.run(go())


def dripline(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPLINE_")}
    env.update(
        COLUMNS="200",
        NO_COLOR="1",
        DRIPLINE_DATABASE_URL=url,
        DRIPLINE_FLOWS_DIR=str(REPO / "flows"),
    )
    base = ["import", "--flow", "free-trial", "--from-postgres", url]
    return subprocess.run(
        [DRIPLINE, *base, *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_dry_run_then_import_then_again(postgres_url: str) -> None:
    asyncio.run(seed(postgres_url, ROWS))

    dry = dripline(postgres_url, "--query", QUERY, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert (plan["dry_run"], plan["rows"], plan["to_import"]) == (True, 4, 3)
    assert plan["skipped"] == [{"key": "4", "reason": "state completed"}]
    by_key = {c["key"]: c for c in plan["conversations"]}
    assert (by_key["1"]["step_id"], by_key["1"]["state"], by_key["1"]["next"]) == (
        "setup", "in_progress", "question"
    )  # fmt: skip
    assert (by_key["2"]["step"], by_key["2"]["state"]) == (0, "pending")
    # Question 3 went out three hours ago and waits for its answer (1 day, no reminder).
    assert (by_key["3"]["step_id"], by_key["3"]["state"], by_key["3"]["next"]) == (
        "feature", "awaiting_reply", "timeout"
    )  # fmt: skip
    assert by_key["3"]["at"] == (NOW + timedelta(hours=21)).isoformat()
    assert conversations(postgres_url) == []  # a dry run writes nothing

    text = dripline(postgres_url, "--query", QUERY, "--dry-run")
    assert text.returncode == 0 and "would import 3 into free-trial" in text.stdout, text

    first = dripline(postgres_url, "--query", QUERY, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["imported"], report["existing"]) == (3, 0)
    rows = {c.phone: c for c in conversations(postgres_url)}
    assert sorted(rows) == ["+14155550101", "+14155550102", "+14155550103"]
    ann = rows["+14155550101"]
    assert (ann.step, ann.state, ann.purpose, ann.name) == (1, "in_progress", "question", "Ann")
    assert ann.next_send_at == NOW + timedelta(hours=2)
    assert dict(ann.fields) == {"plan": "Gold"}
    assert rows["+14155550103"].state == "awaiting_reply"

    # The same import again, with one more trial since: nothing duplicated.
    asyncio.run(add_one(postgres_url))
    again = dripline(postgres_url, "--query", QUERY, "--json")
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["imported"], json.loads(again.stdout)["existing"]) == (1, 3)
    assert len(conversations(postgres_url)) == 4


async def add_one(url: str) -> None:
    conn = await asyncpg.connect(dsn(url))
    try:
        await conn.execute(
            'INSERT INTO "freeTrials" ("phoneNumber", name, "conversationState", '
            '"currentQuestion", "nextQuestionScheduledFor") '
            "VALUES ('+14155550105', 'Eve', 'in_progress', 1, now() at time zone 'utc')"
        )
    finally:
        await conn.close()


def test_a_bad_row_or_query_writes_nothing(postgres_url: str) -> None:
    asyncio.run(seed(postgres_url, [*ROWS, ("12", "Bad", None, "in_progress", 1, None, None)]))
    bad = dripline(postgres_url, "--query", QUERY)
    assert_one_line_error(bad, "row 5 (key 5)", "phone")
    assert bad.returncode == 2
    assert conversations(postgres_url) == []

    skipping = dripline(postgres_url, "--query", QUERY, "--skip-invalid", "--json")
    assert skipping.returncode == 0, skipping.stderr
    report = json.loads(skipping.stdout)
    assert report["imported"] == 3 and [i["row"] for i in report["invalid"]] == [5]

    no_step = dripline(postgres_url, "--query", 'SELECT "phoneNumber" AS phone FROM "freeTrials"')
    assert_one_line_error(no_step, "--query", "no step column", "it returns: phone")
    typo = dripline(postgres_url, "--query", 'SELECT * FROM "freeTrial"')
    assert_one_line_error(typo, "--query", "freeTrial")
    beyond = dripline(
        postgres_url, "--query", 'SELECT "phoneNumber" AS phone, 9 AS step FROM "freeTrials"'
    )
    assert_one_line_error(beyond, "row 1", "step 9 is outside flow free-trial's steps 0 to 6")
