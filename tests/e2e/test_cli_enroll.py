"""`dripline enroll`, `import` and `db` as a user runs them: the installed console script
in a subprocess. Errors are one line, no traceback, non-zero exit, nothing written."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dripline.store import Suppression, open_store

DRIPLINE = str(Path(sys.executable).with_name("dripline"))
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPLINE_")}
    env.update(COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [DRIPLINE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def count_pending(url: str) -> int:
    async def go() -> int:
        store = await open_store(url)
        try:
            return (await store.backlog(FAR_FUTURE)).by_state["pending"]
        finally:
            await store.close()

    return asyncio.run(go())


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(["phone,name,timezone,at,plan", *rows]) + "\n")
    return path


def test_enroll_one_then_again(tmp_path: Path, sqlite_url: str) -> None:
    at = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    args = ["enroll", "--flow", "demo", "--phone", "+1 415 555 0100", "--database-url"]
    first = run(*args, sqlite_url, "--at", at.isoformat(), "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert (data["created"], data["phone"], data["at"]) == (True, "+14155550100", at.isoformat())
    again = run(*args, sqlite_url, cwd=tmp_path)
    assert again.returncode == 0 and "already active" in again.stdout
    assert count_pending(sqlite_url) == 1


def test_enroll_rejects_bad_input(tmp_path: Path, sqlite_url: str) -> None:
    base = ["enroll", "--flow", "demo", "--database-url", sqlite_url]
    assert_one_line_error(run(*base, "--phone", "12", cwd=tmp_path), "--phone", "phone")
    bad_at = run(*base, "--phone", "+14155550100", "--at", "tomorrow", cwd=tmp_path)
    assert_one_line_error(bad_at, "--at", "ISO 8601")
    bad_tz = run(*base, "--phone", "+14155550100", "--timezone", "Mars/Base", cwd=tmp_path)
    assert_one_line_error(bad_tz, "--timezone", "Mars/Base")
    assert bad_tz.returncode == 2


def test_import_all_rows(tmp_path: Path, sqlite_url: str) -> None:
    csv_file = write_csv(
        tmp_path / "people.csv",
        [
            "+14155550101,Ann,Europe/Paris,2026-03-01T09:00,gold",
            "14155550102,Bob,,,",
            "+14155550101,Ann again,,,",  # a duplicate: already active
        ],
    )
    proc = run(
        "import",
        str(csv_file),
        "--flow",
        "demo",
        "--database-url",
        sqlite_url,
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["rows"], report["created"], report["existing"], report["skipped"]) == (
        3,
        2,
        1,
        [],
    )
    assert count_pending(sqlite_url) == 2


def test_import_bad_row_writes_nothing(tmp_path: Path, sqlite_url: str) -> None:
    csv_file = write_csv(
        tmp_path / "people.csv",
        ["+14155550101,Ann,,,", "+14155550102,Bob,,,", "+1415555,Bad,,,", "+14155550104,Di,,,"],
    )
    proc = run(
        "import", str(csv_file), "--flow", "demo", "--database-url", sqlite_url, cwd=tmp_path
    )
    assert_one_line_error(proc, f"{csv_file}:4", "phone")
    assert proc.returncode == 2
    assert count_pending(sqlite_url) == 0


def test_import_bad_timezone_and_at_name_line_and_field(tmp_path: Path, sqlite_url: str) -> None:
    for row, field in [
        ("+14155550101,Ann,Nowhere/City,,", "timezone"),
        ("+14155550101,Ann,,yesterday,", "at"),
    ]:
        csv_file = write_csv(tmp_path / f"{field}.csv", [row])
        proc = run(
            "import", str(csv_file), "--flow", "demo", "--database-url", sqlite_url, cwd=tmp_path
        )
        assert_one_line_error(proc, f"{csv_file}:2", field)


def test_import_skip_invalid_reports_lines(tmp_path: Path, sqlite_url: str) -> None:
    csv_file = write_csv(
        tmp_path / "people.csv",
        ["+14155550101,Ann,,,", "nope,Bad,,,", "+14155550103,Cy,Mars/Base,,", "+14155550104,,,,"],
    )
    proc = run(
        "import",
        str(csv_file),
        "--flow",
        "demo",
        "--skip-invalid",
        "--json",
        "--database-url",
        sqlite_url,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [s["line"] for s in report["skipped"]] == [3, 4]
    assert report["created"] == 2
    assert count_pending(sqlite_url) == 2


def test_import_without_phone_column(tmp_path: Path, sqlite_url: str) -> None:
    csv_file = tmp_path / "x.csv"
    csv_file.write_text("name\nAnn\n")
    proc = run(
        "import", str(csv_file), "--flow", "demo", "--database-url", sqlite_url, cwd=tmp_path
    )
    assert_one_line_error(proc, f"{csv_file}:1", "phone")
    missing = run(
        "import",
        str(tmp_path / "missing.csv"),
        "--flow",
        "demo",
        "--database-url",
        sqlite_url,
        cwd=tmp_path,
    )
    assert_one_line_error(missing, "missing.csv")


@pytest.mark.parametrize(
    ("url", "needles"),
    [
        ("postgresql://dripline:s3cret@127.0.0.1:1/dripline", ("127.0.0.1:1/dripline",)),
        ("sqlite:////nonexistent-dir/sub/x.db", ("/nonexistent-dir/sub/x.db",)),
    ],
)
def test_unreachable_database(tmp_path: Path, url: str, needles: tuple[str, ...]) -> None:
    proc = run(
        "enroll", "--flow", "demo", "--phone", "+14155550100", "--database-url", url, cwd=tmp_path
    )
    assert_one_line_error(proc, *needles)
    assert "s3cret" not in proc.stderr
    assert proc.returncode == 1


@pytest.mark.parametrize("url", ["not a url", "mysql://u:s3cret@h/db", "postgresql://h:5432"])
def test_malformed_database_url(tmp_path: Path, url: str) -> None:
    proc = run(
        "enroll", "--flow", "demo", "--phone", "+14155550100", "--database-url", url, cwd=tmp_path
    )
    assert_one_line_error(proc, "database_url")
    assert "s3cret" not in proc.stderr


def test_db_upgrade_and_current(tmp_path: Path, sqlite_url: str) -> None:
    before = run("db", "current", "--database-url", sqlite_url, "--json", cwd=tmp_path)
    assert before.returncode == 0 and json.loads(before.stdout)["current"] is None
    upgraded = run("db", "upgrade", "--database-url", sqlite_url, "--json", cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)["from"] is None
    after = run("db", "current", "--database-url", sqlite_url, cwd=tmp_path)
    assert after.returncode == 0 and "up to date" in after.stdout


@pytest.mark.postgres
def test_db_upgrade_postgres_then_enroll(tmp_path: Path, empty_postgres_url: str) -> None:
    refused = run(
        "enroll",
        "--flow",
        "demo",
        "--phone",
        "+14155550100",
        "--database-url",
        empty_postgres_url,
        cwd=tmp_path,
    )
    assert_one_line_error(refused, "dripline db upgrade")
    assert run("db", "upgrade", "--database-url", empty_postgres_url, cwd=tmp_path).returncode == 0
    ok = run(
        "enroll",
        "--flow",
        "demo",
        "--phone",
        "+14155550100",
        "--database-url",
        empty_postgres_url,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr


def test_every_command_has_help(tmp_path: Path) -> None:
    for args in (["enroll"], ["import"], ["db"], ["db", "upgrade"], ["db", "current"]):
        proc = run(*args, "--help", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "Usage" in proc.stdout
        if args != ["db"]:
            assert "--database-url" in proc.stdout


def test_unknown_flow_is_refused_before_anything_is_written(
    tmp_path: Path, sqlite_url: str
) -> None:
    proc = run(
        "enroll",
        "--flow",
        "nope",
        "--phone",
        "+14155550100",
        "--database-url",
        sqlite_url,
        cwd=tmp_path,
    )
    assert_one_line_error(proc, "--flow", "nope")
    assert not (tmp_path / "dripline.db").exists() or "nope" not in proc.stdout


def test_a_number_that_opted_out_needs_opt_in(tmp_path: Path, sqlite_url: str) -> None:
    async def stop() -> None:
        store = await open_store(sqlite_url)
        try:
            async with store.webhook_transaction() as tx:
                when = datetime(2026, 3, 1, tzinfo=UTC)
                await tx.add_suppressions([Suppression("1", "+14155550100", "STOP", when)])
        finally:
            await store.close()

    asyncio.run(stop())  # the inbox recorded a STOP (open_store creates the schema)
    args = ["enroll", "--flow", "demo", "--phone", "+14155550100", "--database-url", sqlite_url]
    refused = run(*args, cwd=tmp_path)
    assert_one_line_error(refused, "--phone: +14155550100 opted out", "--opt-in")
    csv_file = write_csv(tmp_path / "people.csv", ["+14155550101,A,,,", "+14155550100,B,,,"])
    imported = ["import", str(csv_file), "--flow", "demo", "--database-url", sqlite_url]
    assert_one_line_error(run(*imported, cwd=tmp_path), "people.csv:3: +14155550100 opted out")
    assert count_pending(sqlite_url) == 0
    ok = run(*args, "--opt-in", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert count_pending(sqlite_url) == 1
