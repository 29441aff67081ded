"""`/readyz`'s decision, as a table: each input that must (or must not) make a process
not ready, and what the operator is told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dripline.health import ReadinessInputs, decide
from dripline.store import StoreHealth

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HEAD = "0002_evidence"


def inputs(**changes: object) -> ReadinessInputs:
    base: dict[str, object] = {
        "now": NOW,
        "head": HEAD,
        "health": StoreHealth(HEAD, 0, None),
        "breaker_open": False,
        "inbox_checked": True,
        "max_inbox_lag_s": 300.0,
    }
    base.update(changes)
    return ReadinessInputs(**base)  # type: ignore[arg-type]


CASES = [
    # (name, inputs, failing, a phrase the detail of the first failing check contains)
    ("all well", inputs(), [], None),
    (
        "database unreachable",
        inputs(health=None, database_error="connection refused"),
        ["database"],
        "connection refused",
    ),
    ("schema behind", inputs(health=StoreHealth("0001_initial", 0, None)), ["schema"],
     "run `dripline db upgrade`"),
    ("no schema at all", inputs(health=StoreHealth(None, 0, None)), ["schema"],
     "no dripline schema"),
    ("breaker open", inputs(breaker_open=True, breaker_reason="auth error 190"), ["breaker"],
     "auth error 190"),
    ("no dispatcher here", inputs(breaker_open=None), [], None),
    ("inbox behind", inputs(health=StoreHealth(HEAD, 7, NOW - timedelta(seconds=301))),
     ["inbox"], "7 webhook(s) waiting, the oldest for 301 s"),
    ("inbox at the limit", inputs(health=StoreHealth(HEAD, 7, NOW - timedelta(seconds=300))),
     [], None),
    ("inbox behind but not applied here",
     inputs(inbox_checked=False, health=StoreHealth(HEAD, 7, NOW - timedelta(hours=2))), [], None),
    ("a clock behind the database's", inputs(health=StoreHealth(HEAD, 1, NOW + timedelta(5))),
     [], None),
    ("everything at once",
     inputs(health=StoreHealth("x", 1, NOW - timedelta(hours=1)), breaker_open=True),
     ["schema", "breaker", "inbox"], "database at x"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "given", "failing", "phrase"), CASES, ids=[c[0] for c in CASES])
def test_decide(name: str, given: ReadinessInputs, failing: list[str], phrase: str | None) -> None:
    readiness = decide(given)
    assert readiness.failing == failing
    assert readiness.ready is (not failing)
    doc = readiness.document()
    assert doc["status"] == ("ready" if not failing else "not ready")
    assert doc["failing"] == failing
    assert set(doc["checks"]) == {"database", "schema", "breaker", "inbox"}
    if phrase is not None:
        assert phrase in doc["checks"][failing[0]]["detail"]


def test_an_unreachable_database_skips_what_it_cannot_know() -> None:
    checks = decide(inputs(health=None, database_error="timeout")).document()["checks"]
    assert checks["schema"]["status"] == "skipped"
    assert checks["inbox"]["status"] == "skipped"
    assert checks["breaker"]["status"] == "ok"


def test_every_health_route_is_public() -> None:
    # Orchestrators probe without a token; a health route the guard does not list as
    # public would answer 401 to Docker, compose and Render.
    from dripline.server.guard import PUBLIC_PATHS
    from dripline.server.health import router

    paths = {getattr(route, "path", None) for route in router.routes}
    assert paths == {"/healthz", "/readyz"}
    assert paths <= PUBLIC_PATHS
