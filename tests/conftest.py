"""Test configuration shared by every suite.

Fixtures live in `tests/fixtures/<area>.py`, one module per area, loaded here.
"""

from __future__ import annotations

pytest_plugins: list[str] = [
    "tests.fixtures.db",
    "tests.fixtures.fake",
    "tests.fixtures.dispatch",
    "tests.fixtures.nginx",
]
