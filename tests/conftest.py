"""Test configuration shared by every suite.

Fixtures live in `tests/fixtures/<area>.py`, one module per area, loaded here.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

# No per-example wall-clock deadline (hypothesis's default is 200 ms): tests never assert
# on wall time, and on two shared cores a parser example took 294 ms under load while
# passing alone. A slow example still shows in hypothesis's statistics.
settings.register_profile("dripline", deadline=None)
settings.load_profile("dripline")

pytest_plugins: list[str] = [
    "tests.fixtures.db",
    "tests.fixtures.fake",
    "tests.fixtures.dispatch",
    "tests.fixtures.nginx",
]


_SERIAL = {("tests", "e2e"), ("tests", "sim")}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs two xdist workers (`-n 2 --dist loadgroup`). The end-to-end tests
    and the simulator's seeds (two processes of their own) share one worker, one at a
    time, so those that wait on real timers never compete with each other for the two
    cores; unit and integration tests run on the other worker meanwhile.

    `tryfirst`: xdist's worker reads the mark in this same hook to tag the node id
    (`...@serial`), and its hook would otherwise run before this one (it registers later),
    so the mark came too late and the group was never formed
    (tests/integration/test_suite_grouping.py)."""
    for item in items:
        if item.path.relative_to(config.rootpath).parts[:2] in _SERIAL:
            item.add_marker(pytest.mark.xdist_group("serial"))
