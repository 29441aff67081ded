"""Enrollment refuses a value Meta would refuse in a template text parameter (132018),
whichever parameter it lands in, with a 422 naming the field and nothing stored; and it
asks for every placeholder a template needs, not only the body's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dripline.clock import FakeClock
from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.settings import load_settings
from dripline.store import Store
from tests.fixtures.dispatch import TOKEN
from tests.integration.test_server_api import NOW

FLOW = """
name: promo
steps:
  - id: q1
    template:
      name: order_update
      named_params: {first_name: "{name}", plan: "{plan}"}
      header: {text: "{headline}"}
      buttons:
        - {index: 0, payload: "yes-{choice}"}
        - {index: 1, url_suffix: "{token}"}
"""

GOOD: dict[str, Any] = {
    "phone": "+14155550123",
    "flow": "promo",
    "name": "Ann",
    "fields": {"plan": "Pro", "headline": "Hello", "choice": "a", "token": "abc"},
}


@pytest.fixture
async def post(tmp_path: Path, store: Store) -> AsyncIterator[Any]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "promo.yaml").write_text(FLOW)
    settings = load_settings(
        database_url="sqlite:///unused.db",
        flows_dir=flows,
        whatsapp_app_secret="app-secret",
        whatsapp_verify_token="verify-me",
        api_token=TOKEN,
    )
    app = create_app(settings, store=store, clock=FakeClock(NOW), process_inbox=False)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_server(app) as base, aiohttp.ClientSession(headers=auth) as http:

        async def call(body: Any) -> tuple[int, Any]:
            async with http.post(f"{base}/v1/conversations", json=body) as resp:
                return resp.status, await resp.json()

        yield call


@pytest.mark.parametrize(
    ("change", "where", "what"),
    [
        ({"fields": {**GOOD["fields"], "plan": "Pro\nMax"}}, "fields.plan", "a line break"),
        ({"fields": {**GOOD["fields"], "headline": "a\tb"}}, "fields.headline", "a tab"),
        ({"fields": {**GOOD["fields"], "token": "a     b"}}, "fields.token", "5 consecutive"),
        ({"name": "Ann\nMarie"}, "name", "a line break"),
    ],
)
async def test_a_value_meta_would_refuse_is_a_422_naming_the_field(
    post: Any, store: Store, change: dict[str, Any], where: str, what: str
) -> None:
    status, body = await post([{**GOOD, "phone": "+14155550199"}, {**GOOD, **change}])
    assert status == 422, body
    detail = body["detail"]
    assert detail.startswith(f"body[1].{where}: has {what}"), detail
    assert "132018" in detail and "\n" not in detail
    assert (await store.snapshot()).conversations == ()  # the whole list refused


@pytest.mark.parametrize("missing", ["headline", "choice", "token"])
async def test_every_template_placeholder_is_required(
    post: Any, store: Store, missing: str
) -> None:
    fields = {k: v for k, v in GOOD["fields"].items() if k != missing}
    status, body = await post({**GOOD, "fields": fields})
    assert status == 422, body
    assert body["detail"].startswith(f"fields.{missing}: flow 'promo' needs a value")


async def test_a_good_enrollment_and_a_payload_with_a_line_break_are_accepted(
    post: Any,
) -> None:
    # A quick-reply payload is not a text parameter: Meta states no rule for it.
    status, body = await post({**GOOD, "fields": {**GOOD["fields"], "choice": "a\nb"}})
    assert status == 201, body
