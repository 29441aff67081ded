"""The fake Cloud API as an aiohttp application.

`POST /{version}/{phone_number_id}/messages` is checked in Meta's order of concerns:

    outage -> injected faults -> latency -> bearer token (190) -> token expiry (190)
    -> body (100) -> throughput per number (130429) -> pair limit (131056)
    -> 24 h window for free-form text (131047) -> template (132001 / 132000) -> 200

Only the 200 path records the message. Injected hangs and resets happen before
acceptance, so they are never recorded (the client's `maybe_sent=True` is a worst case
there); `lost_response_fraction` is the opposite case: recorded, then the connection
is reset before the answer.

Test endpoints: `GET /_fake/stats`, `GET /_fake/messages[?to=&limit=]`,
`POST /_fake/reset`, `POST /_fake/inbound {"from", "text", "phone_number_id"}`.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dripline.fake.config import FakeConfig, lognormal_params
from dripline.fake.state import AcceptedMessage, FakeState
from dripline.fake.webhooks import WebhookSender

__all__ = [
    "SENDER_KEY",
    "STATE_KEY",
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
_PHONE = re.compile(r"^\+?[0-9 ()\-.]{5,24}$")
_OTHER_TYPES = frozenset(
    {
        "audio",
        "contacts",
        "document",
        "image",
        "interactive",
        "location",
        "reaction",
        "sticker",
        "video",
    }
)
_TITLES = {
    1: "An unknown error occurred",
    100: "Invalid parameter",
    130429: "Rate limit hit",
    131047: "Re-engagement message",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
}
_MAX_TEXT_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Problem:
    """A request the real API would refuse: Meta's code and a `details` text."""

    code: int
    details: str


@dataclass(frozen=True, slots=True)
class Parsed:
    to: str  # digits only, as Meta's wa_id
    to_input: str
    type: str
    body: str  # text body or template name
    params: int  # template body parameters
    callback_data: str | None


def _digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


def check_message(data: Any) -> Parsed | Problem:
    """Validate a `/messages` body like the Cloud API does (code 100 for bad input)."""
    if not isinstance(data, dict):
        return Problem(100, "The request body must be a JSON object")
    if data.get("messaging_product") != "whatsapp":
        return Problem(100, "The parameter messaging_product is required and must be whatsapp")
    to = data.get("to")
    if not isinstance(to, str) or not _PHONE.match(to) or not 5 <= len(_digits(to)) <= 15:
        return Problem(100, "Invalid parameter: to must be a phone number")
    kind = data.get("type", "text")
    callback = data.get("biz_opaque_callback_data")
    if callback is not None and (not isinstance(callback, str) or len(callback) > 512):
        return Problem(100, "biz_opaque_callback_data must be a string of at most 512 chars")
    if kind == "text":
        text = data.get("text")
        body = text.get("body") if isinstance(text, dict) else None
        if not isinstance(body, str) or not body.strip():
            return Problem(100, "The parameter text['body'] is required")
        if len(body) > _MAX_TEXT_CHARS:
            return Problem(100, f"text['body'] is longer than {_MAX_TEXT_CHARS} characters")
        return Parsed(_digits(to), to, "text", body, 0, callback)
    if kind == "template":
        template = data.get("template")
        if not isinstance(template, dict):
            return Problem(100, "The parameter template is required")
        name = template.get("name")
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if not isinstance(name, str) or not name:
            return Problem(100, "The parameter template['name'] is required")
        if not isinstance(code, str) or not code:
            return Problem(100, "The parameter template['language']['code'] is required")
        params = 0
        components = template.get("components", [])
        if not isinstance(components, list):
            return Problem(100, "template['components'] must be an array")
        for component in components:
            if isinstance(component, dict) and component.get("type") == "body":
                parameters = component.get("parameters", [])
                if not isinstance(parameters, list):
                    return Problem(100, "template body parameters must be an array")
                params += len(parameters)
        return Parsed(_digits(to), to, "template", name, params, callback)
    if isinstance(kind, str) and kind in _OTHER_TYPES:
        if not isinstance(data.get(kind), dict):
            return Problem(100, f"The parameter {kind} is required")
        return Parsed(_digits(to), to, kind, kind, 0, callback)
    return Problem(100, "Invalid parameter: type")


def error_body(code: int, details: str, fbtrace_id: str, message: str | None = None) -> bytes:
    """Meta's error JSON for `code`."""
    error: dict[str, Any] = {
        "message": message or f"(#{code}) {_TITLES.get(code, 'Error')}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": fbtrace_id,
    }
    return _encode({"error": error}).encode()


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
        parsed = check_message(data)
        if isinstance(parsed, Problem):
            return self._error(parsed.code, parsed.details)

        number = request.match_info["phone_number_id"]
        now = time.monotonic()
        if not state.take_throughput(number, now):
            return self._error(130429, "Message throughput for this phone number was reached")
        if not state.take_pair(number, parsed.to, now):
            return self._error(131056, "Too many messages sent to this recipient too fast")
        if (
            cfg.enforce_window
            and parsed.type != "template"
            and not state.window_open(parsed.to, now)
        ):
            return self._error(
                131047, "Message failed to send because more than 24 hours have passed"
            )
        if parsed.type == "template" and cfg.templates is not None:
            expected = cfg.templates.get(parsed.body)
            if expected is None:
                return self._error(132001, f"template name ({parsed.body}) does not exist")
            if expected != parsed.params:
                return self._error(
                    132000, f"expected {expected} body parameters, got {parsed.params}"
                )

        wamid = state.new_wamid()
        message = AcceptedMessage(
            wamid,
            number,
            parsed.to,
            parsed.type,
            parsed.body,
            parsed.callback_data,
            now,
            time.time(),
            arrived_wall,
        )
        dup_key = (
            parsed.body
            if parsed.type == "text"
            else f"{parsed.type}:{_encode(data.get(parsed.type))}"
        )
        state.record(message, dup_key)
        if cfg.webhook_url:
            self.sender.schedule_statuses(message)
        if cfg.lost_response_fraction and state.rng.random() < cfg.lost_response_fraction:
            stats.lost_responses += 1
            _reset_connection(request)
            return web.Response(status=500)
        result: dict[str, Any] = {"id": wamid}
        if parsed.type == "template":
            result["message_status"] = "accepted"
        return _json(
            _encode(
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": parsed.to_input, "wa_id": parsed.to}],
                    "messages": [result],
                }
            ).encode()
        )

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.snapshot(self.sender.pending))

    async def messages(self, request: web.Request) -> web.Response:
        to = request.query.get("to")
        items = self.state.messages
        if to is not None:
            digits = _digits(to)
            items = [m for m in items if m.to == digits]
        limit = request.query.get("limit")
        if limit is not None and limit.isdigit():
            items = items[-int(limit) :] if int(limit) else []
        return web.json_response([m.as_dict() for m in items])

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        self.sender.clear()
        return web.json_response({"reset": True})

    async def inbound(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("from"), str):
            return web.json_response({"error": "body must be {from, text}"}, status=400)
        user = _digits(data["from"])
        text = str(data.get("text", "hi"))
        number = str(data.get("phone_number_id", "000000000000000"))
        self.sender.schedule_inbound(number, user, text, float(data.get("delay_s", 0.0)))
        return web.json_response({"queued": True, "from": user})

    async def phone_number(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.state.expected_auth:
            return self._auth_error("Invalid OAuth access token - Cannot parse access token")
        number = request.match_info["phone_number_id"]
        return web.json_response({"id": number, "throughput": {"level": "STANDARD"}})


def create_app(config: FakeConfig | None = None) -> web.Application:
    """The fake Cloud API application; its state is `app[STATE_KEY]`."""
    cfg = config or FakeConfig()
    state = FakeState(cfg)
    sender = WebhookSender(state)
    stopping = asyncio.Event()
    handlers = _Handlers(state, sender, stopping)
    app = web.Application()
    app[STATE_KEY] = state
    app[SENDER_KEY] = sender
    app[_STOPPING_KEY] = stopping
    app.router.add_post("/{version}/{phone_number_id}/messages", handlers.send)
    app.router.add_get("/_fake/stats", handlers.stats)
    app.router.add_get("/_fake/messages", handlers.messages)
    app.router.add_post("/_fake/reset", handlers.reset)
    app.router.add_post("/_fake/inbound", handlers.inbound)
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
