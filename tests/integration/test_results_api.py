"""`GET /v1/flows/{name}/results` over real loopback HTTP, on every backend: the numbers
the store holds, 404 for an unknown flow, the token required, the OpenAPI schema."""

from __future__ import annotations

import aiohttp

from dripline.store import Enrollment
from tests.integration.test_server_api import Api, api  # noqa: F401 -- the fixture
from tests.integration.test_store_results import T0, ask, reply, statuses


async def test_results_of_a_flow(api: Api) -> None:  # noqa: F811
    store = api.store
    a, b, c = (
        r.id
        for r in await store.enroll(
            [Enrollment(f"+1415555010{i}", "survey", at=T0) for i in range(3)], T0
        )
    )
    wamids = [await ask(store, cid, 0, T0) for cid in (a, b, c)]
    await statuses(store, (wamids[0], "read"), (wamids[1], "delivered"))
    async with store.webhook_transaction() as tx:
        await tx.insert_inbound(
            [reply(a, 0, 40, "text"), reply(b, 0, 20, None, valid=False), reply(b, 0, 80, "text")]
        )
    status, body = await api.call("GET", "/v1/flows/survey/results")
    assert status == 200, body
    assert (body["flow"], body["conversations"]) == ("survey", 3)
    q1, q2 = body["questions"]
    assert (q1["id"], q1["kind"], q2["id"]) == ("q1", "text", "q2")
    assert q1["funnel"] == {"sent": 3, "delivered": 2, "read": 1, "answered": 2}
    assert (q1["response_rate"], q1["median_answer_s"]) == (0.6667, 60.0)
    assert (q1["replies"], q1["invalid"], q1["invalid_rate"], q1["texts"]) == (3, 1, 0.3333, 2)
    assert q2["funnel"] == {"sent": 0, "delivered": 0, "read": 0, "answered": 0}


async def test_unknown_flow_is_404_and_a_bad_name_422(api: Api) -> None:  # noqa: F811
    status, body = await api.call("GET", "/v1/flows/nope/results")
    assert (status, body) == (404, {"detail": "flow 'nope' does not exist"})
    status, body = await api.call("GET", "/v1/flows/No%20pe/results")
    assert status == 422 and "name" in body["detail"], body


async def test_results_need_the_token_and_are_in_the_schema(api: Api) -> None:  # noqa: F811
    url = api.base + "/v1/flows/survey/results"
    async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as resp:
        assert resp.status == 401
    status, schema = await api.call("GET", "/openapi.json")
    assert status == 200
    operation = schema["paths"]["/v1/flows/{name}/results"]["get"]
    assert set(operation["responses"]) >= {"200", "401", "404", "422", "503"}
    assert "FlowResultsOut" in schema["components"]["schemas"]
