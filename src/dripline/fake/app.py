"""The fake Cloud API as an aiohttp application.

`POST /{version}/{phone_number_id}/messages` is checked in Meta's order of concerns:

    outage -> injected faults (and `inject_code`) -> latency -> bearer token (190)
    -> token expiry (190) -> body (100) -> throughput per number (130429) -> pair limit (131056)
    -> template registry (132001 / 132000) -> 24 h window for free-form messages
    (131047: refused now with window="sync", else accepted and failed by webhook)
    -> deliverability (131026 by webhook) -> 200

A body with `status` (and no `to`) marks a received message as read instead: after the
token and the JSON, `read_receipts.py` decides (100, 131009 or `{"success": true}`).

Only the 200 path records the message. Injected hangs and resets happen before
acceptance, so they are never recorded (the client's `maybe_sent=True` is a worst case
there); `lost_response_fraction` is the opposite case: recorded, then the connection
is reset before the answer. The decisions themselves are `rules` and `templates`.

`GET /{version}/{phone_number_id}?fields=...` answers the phone number node (the
`throughput` level among its fields). Test endpoints (see `control`): `GET
/_fake/stats`, `GET /_fake/messages[?to=&limit=]`, `POST /_fake/reset`, `POST
/_fake/inbound`, `POST /_fake/value-error`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dripline.fake.config import FakeConfig, lognormal_params
from dripline.fake.control import Control
from dripline.fake.read_receipts import check_read, is_read_request
from dripline.fake.rules import ApiError, api_error, decide_send, is_undeliverable, wa_id_for
from dripline.fake.state import AcceptedMessage, FakeState
from dripline.fake.validate import Parsed, Problem, check_message
from dripline.fake.webhooks import WebhookSender

__all__ = [
    "SENDER_KEY",
    "STATE_KEY",
    "Parsed",
    "Problem",
    "RunningFake",
    "check_message",
    "create_app",
    "error_body",
    "running_fake",
]

STATE_KEY = web.AppKey("fake_state", FakeState)
SENDER_KEY = web.AppKey("fake_webhooks", WebhookSender)
_STOPPING_KEY = web.AppKey("fake_stopping", asyncio.Event)

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# Fields of the phone number node the fake knows (Phone Numbers API reference).
_NUMBER_FIELDS = frozenset(
    {"id", "display_phone_number", "verified_name", "quality_rating", "status", "throughput"}
)
_DEFAULT_NUMBER_FIELDS = ("display_phone_number", "verified_name", "quality_rating")


def error_body(code: int, details: str, fbtrace_id: str, message: str | None = None) -> bytes:
    """Meta's error JSON for `code`."""
    body = api_error(code, details).graph_body(fbtrace_id)
    if message is not None:
        body["error"]["message"] = message
    return _encode(body).encode()


def _api_version(version: str) -> int:
    """The major Graph API version in the path (`v23.0` -> 23); unknown -> newest."""
    head = version.lstrip("v").partition(".")[0]
    return int(head) if head.isdigit() else 99


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _reset_connection(request: web.Request) -> None:
    """Send a TCP RST (SO_LINGER 0) so the client sees 'connection reset by peer'."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Handlers:
    def __init__(self, state: FakeState, sender: WebhookSender, stopping: asyncio.Event) -> None:
        self.state = state
        self.sender = sender
        self.stopping = stopping
        self._lognormal: tuple[float, float, float, float] | None = None

    def _latency_s(self) -> float:
        cfg = self.state.config
        p99 = cfg.latency_p99_ms
        if p99 is None or cfg.latency_ms <= 0 or p99 <= cfg.latency_ms:
            return cfg.latency_ms / 1000.0
        cached = self._lognormal
        if cached is None or cached[0] != cfg.latency_ms or cached[1] != p99:
            mu, sigma = lognormal_params(cfg.latency_ms, p99)
            cached = self._lognormal = (cfg.latency_ms, p99, mu, sigma)
        return self.state.rng.lognormvariate(cached[2], cached[3]) / 1000.0

    def _error(self, code: int, details: str, status: int = 400) -> web.Response:
        self.state.errors_by_code[code] += 1
        return _json(error_body(code, details, f"A{self.state.next_id()}"), status)

    def _auth_error(self, details: str) -> web.Response:
        self.state.errors_by_code[190] += 1
        body = error_body(
            190,
            details,
            f"A{self.state.next_id()}",
            message=f"Error validating access token: {details}",
        )
        return _json(body, 401)

    async def _hang(self, request: web.Request) -> web.Response:
        with suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), self.state.config.hang_s)
        _reset_connection(request)
        return web.Response(status=504)

    async def send(self, request: web.Request) -> web.StreamResponse:
        arrived_wall = time.time()
        state = self.state
        cfg = state.config
        stats = state.stats
        stats.requests += 1
        if state.outage_from is not None and state.in_outage(time.monotonic()):
            stats.outage_rejections += 1
            if cfg.outage_mode == "reset":
                _reset_connection(request)
                return web.Response(status=503)
            return web.Response(status=503, text="Service Unavailable")
        if (
            cfg.reset_fraction
            or cfg.hang_fraction
            or cfg.fail_500_fraction
            or cfg.fail_500_bare_fraction
        ):
            u = state.rng.random()
            if u < cfg.reset_fraction:
                stats.resets += 1
                _reset_connection(request)
                return web.Response(status=500)
            u -= cfg.reset_fraction
            if u < cfg.hang_fraction:
                stats.hangs += 1
                return await self._hang(request)
            u -= cfg.hang_fraction
            if u < cfg.fail_500_fraction:
                return self._error(1, "An unknown error occurred", 500)
            u -= cfg.fail_500_fraction
            if u < cfg.fail_500_bare_fraction:
                state.errors_by_code[500] += 1
                return web.Response(status=500, text="Internal Server Error")
        if cfg.inject_code is not None and state.rng.random() < cfg.inject_code_fraction:
            return self._error(cfg.inject_code, "Injected error (FakeConfig.inject_code)")
        latency_s = self._latency_s() if cfg.latency_ms else 0.0
        if latency_s > 0:
            await asyncio.sleep(latency_s)

        if request.headers.get("Authorization") != state.expected_auth:
            return self._auth_error("Invalid OAuth access token - Cannot parse access token")
        if cfg.token_expires_after is not None and stats.accepted >= cfg.token_expires_after:
            return self._auth_error("Session has expired")
        try:
            data = json.loads(await request.read())
        except ValueError:
            return self._error(100, "The request body is not valid JSON")
        if is_read_request(data):
            return self._mark_read(request.match_info["phone_number_id"], data)
        parsed = check_message(data)
        if isinstance(parsed, Problem):
            return self._error(parsed.code, parsed.details)

        number = request.match_info["phone_number_id"]
        now = time.monotonic()
        wa_id = wa_id_for(parsed.to, cfg.brazil_ninth_digit)
        if not state.take_throughput(number, now):
            return self._error(130429, "Message throughput for this phone number was reached")
        if not state.take_pair(number, wa_id, now):
            return self._error(131056, "Too many messages sent to this recipient too fast")
        if parsed.type == "template" and cfg.templates is not None:
            problem = cfg.templates.check(parsed.body, parsed.language or "", parsed.params)
            if problem is not None:
                return self._error(problem.code, problem.details, problem.http_status)
        in_window = state.window_open(number, wa_id, now)
        decision = decide_send(
            message_type=parsed.type,
            window_is_open=in_window,
            window_mode=cfg.window,
            undeliverable=is_undeliverable(wa_id, cfg.undeliverable_fraction),
        )
        if decision.refuse is not None:
            refused = decision.refuse
            return self._error(refused.code, refused.details, refused.http_status)
        message = AcceptedMessage(
            state.new_wamid(),
            number,
            parsed.to,
            parsed.type,
            parsed.body,
            parsed.callback_data,
            now,
            time.time(),
            arrived_wall,
            wa_id=wa_id,
            failure_code=decision.fail_later.code if decision.fail_later else None,
            language=parsed.language,
            in_window=in_window,
            choices=tuple((c.id, c.title, c.description) for c in parsed.choices),
        )
        return self._accept(request, data, parsed, message, decision.fail_later)

    def _mark_read(self, number: str, data: dict[str, Any]) -> web.Response:
        """Mark a received message as read (`read_receipts.py`): no throughput or window
        check, it sends the user nothing but blue ticks."""
        found = check_read(data, self.state.received, number)
        if isinstance(found, Problem):
            return self._error(found.code, found.details)
        self.state.marked_read.append(data["message_id"])
        return _json(b'{"success":true}')

    def _accept(
        self,
        request: web.Request,
        data: dict[str, Any],
        parsed: Parsed,
        message: AcceptedMessage,
        failure: ApiError | None,
    ) -> web.Response:
        state = self.state
        cfg = state.config
        dup_key = (
            parsed.body
            if parsed.type == "text"
            else f"{parsed.type}:{_encode(data.get(parsed.type))}"
        )
        state.record(message, dup_key)
        if cfg.webhook_url:
            version = _api_version(request.match_info["version"])
            self.sender.schedule_statuses(message, failure, version)
        if cfg.lost_response_fraction and state.rng.random() < cfg.lost_response_fraction:
            state.stats.lost_responses += 1
            _reset_connection(request)
            return web.Response(status=500)
        result: dict[str, Any] = {"id": message.wamid}
        if parsed.type == "template":
            result["message_status"] = "accepted"
        # Send messages reference: `contacts[0].input` is the number as sent, `wa_id`
        # the user's WhatsApp ID, which may differ (rules.wa_id_for).
        return _json(
            _encode(
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": parsed.to_input, "wa_id": message.wa_id}],
                    "messages": [result],
                }
            ).encode()
        )

    async def phone_number(self, request: web.Request) -> web.Response:
        """The phone number node: `?fields=throughput` answers `{"throughput": {"level":
        ...}, "id": ...}` (throughput page, "Get throughput level"); unknown fields are
        100, as Graph API answers for a field a node does not have."""
        if request.headers.get("Authorization") != self.state.expected_auth:
            return self._auth_error("Invalid OAuth access token - Cannot parse access token")
        cfg = self.state.config
        self.state.stats.number_reads += 1
        number = request.match_info["phone_number_id"]
        asked = request.query.get("fields")
        fields = (
            [f.strip() for f in asked.split(",") if f.strip()] if asked else _DEFAULT_NUMBER_FIELDS
        )
        unknown = [f for f in fields if f not in _NUMBER_FIELDS]
        if unknown:
            return self._error(
                100,
                f"Tried accessing nonexisting field ({unknown[0]}) on node type "
                "(WhatsAppBusinessPhoneNumber)",
            )
        values: dict[str, Any] = {
            "display_phone_number": cfg.display_phone_number,
            "verified_name": "dripline fake",
            "quality_rating": "GREEN",
            "status": "CONNECTED",
            "throughput": {"level": cfg.number_level(number)},
        }
        body = {f: values[f] for f in fields if f != "id"}
        body["id"] = number  # Graph API always returns the node's id
        return web.json_response(body)


def create_app(config: FakeConfig | None = None) -> web.Application:
    """The fake Cloud API application; its state is `app[STATE_KEY]`."""
    cfg = config or FakeConfig()
    state = FakeState(cfg)
    sender = WebhookSender(state)
    stopping = asyncio.Event()
    handlers = _Handlers(state, sender, stopping)
    control = Control(state, sender)
    app = web.Application()
    app[STATE_KEY] = state
    app[SENDER_KEY] = sender
    app[_STOPPING_KEY] = stopping
    app.router.add_post("/{version}/{phone_number_id}/messages", handlers.send)
    control.add_routes(app.router)
    app.router.add_get("/{version}/{phone_number_id}", handlers.phone_number)

    async def webhook_task(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sender.run(), name="fake-webhook-sender")
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await sender.close()

    async def on_shutdown(app: web.Application) -> None:
        stopping.set()  # releases hung requests so shutdown is quick

    app.cleanup_ctx.append(webhook_task)
    app.on_shutdown.append(on_shutdown)
    return app


@dataclass(frozen=True, slots=True)
class RunningFake:
    """A fake serving on loopback: point a client at `base_url`."""

    base_url: str
    state: FakeState
    app: web.Application

    @property
    def config(self) -> FakeConfig:
        return self.state.config

    @property
    def webhooks(self) -> WebhookSender:
        return self.app[SENDER_KEY]


@asynccontextmanager
async def running_fake(
    config: FakeConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningFake]:
    """Serve the fake in this event loop; port 0 picks a free port."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield RunningFake(base_url=f"http://{host}:{bound_port}", state=app[STATE_KEY], app=app)
    finally:
        await runner.cleanup()
