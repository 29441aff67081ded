"""The client against the fake Cloud API over real loopback HTTP, with both HTTP stacks."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from dripline.errors import TransportError, WhatsAppError
from dripline.fake import FakeConfig, RunningFake, TemplateRegistry, TemplateSpec
from dripline.flows.base import TemplateMessage, TextMessage
from dripline.whatsapp import CloudApiClient
from dripline.whatsapp.client import HttpClient
from tests.fixtures.fake import FAKE_NUMBER, FAKE_TOKEN
from tests.fixtures.http_servers import scripted_server

TO = "+15551234567"


@pytest.fixture(params=["builtin", "aiohttp"])
def http_client(request: pytest.FixtureRequest) -> HttpClient:
    value: HttpClient = request.param
    return value


async def test_text_and_template_are_accepted_and_recorded(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    first = await fake_client.send(TO, TextMessage("Hello"), callback_data="conv:1")
    second = await fake_client.send(TO, TemplateMessage("trial_checkin", "en_US", ("Ana",)))
    assert first.wamid != second.wamid
    assert first.wamid.startswith("wamid.")
    assert first.raw["contacts"] == [{"input": TO, "wa_id": "15551234567"}]
    assert second.raw["messages"][0]["message_status"] == "accepted"
    recorded = fake_api.state.messages
    assert [(m.wamid, m.to, m.type, m.body, m.callback_data) for m in recorded] == [
        (first.wamid, "15551234567", "text", "Hello", "conv:1"),
        (second.wamid, "15551234567", "template", "trial_checkin", None),
    ]
    assert recorded[0].phone_number_id == FAKE_NUMBER


async def test_sender_override_reaches_another_number(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    await fake_client.send_text(TO, "hi", sender="999")
    assert fake_api.state.messages[0].phone_number_id == "999"


async def test_bad_token_is_190_auth(fake_api: RunningFake, http_client: HttpClient) -> None:
    async with CloudApiClient(
        base_url=fake_api.base_url,
        access_token="wrong",
        phone_number_id="1",
        http_client=http_client,
    ) as client:
        with pytest.raises(WhatsAppError) as info:
            await client.send_text(TO, "hi")
    assert (info.value.code, info.value.error_class, info.value.http_status) == (190, "auth", 401)
    assert info.value.fbtrace_id
    assert "wrong" not in str(info.value)
    assert fake_api.state.stats.accepted == 0


@pytest.mark.parametrize("to", ["", "abc", "+1", "1234567890123456789"])
async def test_invalid_recipient_is_100_permanent(fake_client: CloudApiClient, to: str) -> None:
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send_text(to, "hi")
    assert (info.value.code, info.value.error_class) == (100, "permanent")
    assert info.value.details


async def test_empty_text_is_100(fake_client: CloudApiClient) -> None:
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send_text(TO, "")
    assert info.value.code == 100


async def test_unknown_template_is_132001(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.config.templates = TemplateRegistry([TemplateSpec("welcome", "en_US", 1)])
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send_template(TO, "nope", "en_US")
    assert (info.value.code, info.value.error_class, info.value.http_status) == (
        132001,
        "permanent",
        404,
    )
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send_template(TO, "welcome", "pt_BR", ("Ana",))
    assert info.value.code == 132001  # the template exists, but not in that language
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send_template(TO, "welcome", "en_US")
    assert (info.value.code, info.value.http_status) == (132000, 400)
    await fake_client.send_template(TO, "welcome", "en_US", ("Ana",))


async def test_throughput_limit_is_130429_throttle(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.config.rate_per_s = 0.001
    fake_api.state.config.burst = 2
    outcomes = []
    for i in range(5):
        try:
            await fake_client.send_text(f"+1555000{i:04d}", "hi")
            outcomes.append("ok")
        except WhatsAppError as exc:
            outcomes.append(f"{exc.code}:{exc.error_class}:{exc.http_status}")
    assert outcomes == ["ok", "ok"] + ["130429:throttle:400"] * 3
    assert fake_api.state.snapshot()["throttled"] == 3


async def test_pair_limit_is_131056_pair_throttle(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.config.pair_burst = 1
    await fake_client.send_text(TO, "one")
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send_text(TO, "two")
    assert (info.value.code, info.value.error_class) == (131056, "pair_throttle")
    await fake_client.send_text("+15559999999", "other users go on")


async def test_window_is_131047_until_the_user_writes(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.config.window = "sync"
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send_text(TO, "hi")
    assert (info.value.code, info.value.error_class, info.value.http_status) == (
        131047,
        "window",
        400,
    )
    assert fake_api.state.snapshot()["window_rejected"] == 1
    await fake_client.send_template(TO, "trial_checkin", "en_US", ("Ana",))  # allowed
    fake_api.webhooks.schedule_inbound(FAKE_NUMBER, "15551234567", "hello")
    await fake_client.send_text(TO, "now inside the window")


async def test_500_with_body_is_transient(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.config.fail_500_fraction = 1.0
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send_text(TO, "hi")
    assert (info.value.code, info.value.error_class, info.value.http_status) == (
        1,
        "transient",
        500,
    )
    assert fake_api.state.stats.accepted == 0


async def test_bare_500_may_have_been_sent(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    """No Cloud API error body: not Meta's answer, so not proof it was refused."""
    fake_api.state.config.fail_500_bare_fraction = 1.0
    with pytest.raises(TransportError) as info:
        await fake_client.send_text(TO, "hi")
    assert (info.value.maybe_sent, info.value.http_status, info.value.code) == (True, 500, None)


async def test_bare_503_outage_may_have_been_sent_then_recovery(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.start_outage(3600)
    with pytest.raises(TransportError) as info:
        await fake_client.send_text(TO, "hi")
    assert (info.value.maybe_sent, info.value.http_status) == (True, 503)
    fake_api.state.start_outage(0)
    await fake_client.send_text(TO, "back")


@asynccontextmanager
async def scripted_client(http_client: HttpClient, *parts: bytes) -> AsyncIterator[CloudApiClient]:
    """A client on `http_client` whose every request is answered with `parts`."""
    async with (
        scripted_server(*parts) as url,
        CloudApiClient(
            base_url=url.removesuffix("/x"),
            access_token=FAKE_TOKEN,
            phone_number_id="1",
            http_client=http_client,
        ) as client,
    ):
        yield client


@pytest.mark.parametrize(
    ("status", "reason"), [(502, "Bad Gateway"), (503, "Service Unavailable"), (504, "Timeout")]
)
async def test_a_gateways_bare_5xx_is_maybe_sent_on_both_stacks(
    http_client: HttpClient, status: int, reason: str
) -> None:
    answer = f"HTTP/1.1 {status} {reason}\r\nContent-Length: 5\r\n\r\noops!".encode()
    async with scripted_client(http_client, answer) as client:
        with pytest.raises(TransportError) as info:
            await client.send_text(TO, "hi")
    assert (info.value.maybe_sent, info.value.http_status) == (True, status)


async def test_an_interim_100_before_the_answer_is_a_success_on_both_stacks(
    http_client: HttpClient,
) -> None:
    """Reproduced before the fix: the builtin stack took the 100 as the answer, the send
    was classed as a retryable failure although the API had accepted it."""
    body = b'{"messaging_product":"whatsapp","messages":[{"id":"wamid.ONE"}]}'
    final = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    async with scripted_client(http_client, b"HTTP/1.1 100 Continue\r\n\r\n", final) as client:
        assert (await client.send_text(TO, "hi")).wamid == "wamid.ONE"


async def test_outage_reset_mode(fake_api: RunningFake, fake_client: CloudApiClient) -> None:
    fake_api.state.config.outage_mode = "reset"
    fake_api.state.start_outage(3600)
    with pytest.raises(TransportError):
        await fake_client.send_text(TO, "hi")


async def test_token_expiry_after_n_messages(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.config.token_expires_after = 2
    await fake_client.send_text("+15550000001", "a")
    await fake_client.send_text("+15550000002", "b")
    with pytest.raises(WhatsAppError) as info:
        await fake_client.send_text("+15550000003", "c")
    assert (info.value.code, info.value.error_class) == (190, "auth")


async def test_hang_is_a_read_timeout_maybe_sent(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.config.hang_fraction = 1.0
    with pytest.raises(TransportError, match="read timeout") as info:
        await fake_client.send_text(TO, "hi")
    assert info.value.maybe_sent is True
    assert fake_api.state.stats.accepted == 0  # a hung request is never accepted


async def test_reset_is_a_maybe_sent_transport_error(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.config.reset_fraction = 1.0
    with pytest.raises(TransportError, match="connection lost") as info:
        await fake_client.send_text(TO, "hi")
    assert info.value.maybe_sent is True
    assert fake_api.state.stats.accepted == 0


async def test_lost_response_was_accepted(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.config.lost_response_fraction = 1.0
    with pytest.raises(TransportError) as info:
        await fake_client.send_text(TO, "hi")
    assert info.value.maybe_sent is True
    assert fake_api.state.stats.accepted == 1  # why maybe_sent must be True


async def test_the_client_keeps_working_after_faults(
    fake_api: RunningFake, fake_client: CloudApiClient
) -> None:
    fake_api.state.config.reset_fraction = 1.0
    with pytest.raises(TransportError):
        await fake_client.send_text(TO, "hi")
    fake_api.state.config.reset_fraction = 0.0
    results = await asyncio.gather(
        *(fake_client.send_text(f"+1555000{i:04d}", "hi") for i in range(20))
    )
    assert len({r.wamid for r in results}) == 20


async def test_connection_refused_is_not_sent(http_client: HttpClient) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with CloudApiClient(
        base_url=f"http://127.0.0.1:{port}",
        access_token=FAKE_TOKEN,
        phone_number_id="1",
        http_client=http_client,
    ) as client:
        with pytest.raises(TransportError, match="cannot connect") as info:
            await client.send_text(TO, "hi")
    assert info.value.maybe_sent is False


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b"<html>oops</html>"), (200, b'{"messages": []}'), (200, b"")],
)
async def test_malformed_json_from_a_server_is_a_clear_error(
    status: int, body: bytes, http_client: HttpClient
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with CloudApiClient(
            base_url=f"http://127.0.0.1:{port}",
            access_token=FAKE_TOKEN,
            phone_number_id="1",
            http_client=http_client,
        ) as client:
            with pytest.raises(TransportError, match="malformed") as info:
                await client.send_text(TO, "hi")
            assert info.value.maybe_sent is True
            assert info.value.http_status == 200
    finally:
        await runner.cleanup()


@pytest.fixture
def fake_config() -> FakeConfig:
    return FakeConfig(access_token=FAKE_TOKEN, seed=3, hang_s=30)
