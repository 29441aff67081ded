"""`dripline enroll` and `dripline import` refuse a value Meta would refuse in a template
text parameter (132018) with one line naming the field, and write nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.e2e.test_cli_enroll import DRIPLINE, assert_one_line_error, count_pending

FLOW = """
name: promo
steps:
  - id: q1
    template:
      name: order_update
      body_params: ["{name}", "{plan}"]
      buttons: [{index: 0, url_suffix: "{token}"}]
"""


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "promo.yaml").write_text(FLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPLINE_")}
    env.update(COLUMNS="200", NO_COLOR="1", DRIPLINE_FLOWS_DIR=str(flows))
    return subprocess.run(
        [DRIPLINE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_import_names_the_line_and_field(tmp_path: Path, sqlite_url: str) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("phone,name,plan,token\n+14155550100,Ann,Pro,abc\n+14155550101,Bob,Pro,a\tb\n")
    proc = run(tmp_path, "import", str(csv), "--flow", "promo", "--database-url", sqlite_url)
    assert_one_line_error(proc, "people.csv:3", "fields.token", "has a tab", "132018")
    assert count_pending(sqlite_url) == 0


def test_import_skip_invalid_skips_only_that_row(tmp_path: Path, sqlite_url: str) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text(
        "phone,name,plan,token\n+14155550100,Ann,Pro,abc\n+14155550101,Bob,Pro     Max,x\n"
    )
    args = ("import", str(csv), "--flow", "promo", "--skip-invalid", "--database-url")
    proc = run(tmp_path, *args, sqlite_url)
    assert proc.returncode == 0, proc.stderr
    assert count_pending(sqlite_url) == 1


def test_enroll_refuses_a_name_with_a_tab(tmp_path: Path, sqlite_url: str) -> None:
    # The flow needs {plan} and {token}, which one `enroll` cannot give: the name is
    # still checked first, since it lands in body parameter 1.
    args = ("enroll", "--flow", "promo", "--phone", "+14155550100", "--name", "A\tB")
    proc = run(tmp_path, *args, "--database-url", sqlite_url)
    assert_one_line_error(proc, "--name", "has a tab")
