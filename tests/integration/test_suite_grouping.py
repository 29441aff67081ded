"""`make test`'s serial group really forms (tests/conftest.py).

The end-to-end tests and the simulator's seeds are meant to share one xdist worker, one
at a time. Twice the group silently did not form (the mark added after xdist had read
it; then pytest 9.2's node ids), and nothing failed: the tests just ran on both workers.
This runs a small suite through the real conftest hook and xdist's `loadgroup`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_end_to_end_tests_share_one_worker_and_the_rest_spread(tmp_path: Path) -> None:
    for area in ("e2e", "sim", "unit"):
        (tmp_path / "tests" / area).mkdir(parents=True)
        body = "".join(f"def test_{i}() -> None:\n    pass\n\n\n" for i in range(6))
        (tmp_path / "tests" / area / f"test_{area}.py").write_text(body)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plugins = ["-p", "tests.conftest", "-p", "no:cacheprovider"]
    xdist = ["-n", "2", "--dist", "loadgroup", "-v", "--rootdir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, *xdist, "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = re.findall(r"\[(gw\d)\] .*PASSED (tests/(\w+)/\S+)", proc.stdout)
    assert len(ran) == 18, proc.stdout
    serial = [(worker, node) for worker, node, area in ran if area in ("e2e", "sim")]
    assert all(node.endswith("@serial") for _, node in serial), serial
    assert len({worker for worker, _ in serial}) == 1, serial
    assert not any(node.endswith("@serial") for _, node, area in ran if area == "unit")
