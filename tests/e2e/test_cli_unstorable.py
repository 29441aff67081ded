"""`dripline enroll --name` with bytes that are not UTF-8: Python turns them into lone
surrogates, which no database or HTTP body can hold. Refused in one line, nothing
stored."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.test_cli_enroll import assert_one_line_error, count_pending, run


def test_enroll_refuses_a_name_that_is_not_text(tmp_path: Path, sqlite_url: str) -> None:
    args = ["enroll", "--flow", "demo", "--phone", "+14155550100", "--database-url", sqlite_url]
    proc = run(*args, "--name", "Ana \udcff", cwd=tmp_path)  # argv b"Ana \xff"
    assert_one_line_error(proc, "--name", "surrogate")
    assert count_pending(sqlite_url) == 0
