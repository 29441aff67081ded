"""The fake's test endpoints under `/_fake/`: inspect it, reset it, play a user.

    GET  /_fake/stats                     counters (FakeState.snapshot)
    GET  /_fake/messages[?to=&limit=]     accepted messages, oldest first
    POST /_fake/reset                     forget messages, counters, windows, webhooks
    POST /_fake/inbound                   a user writes (any documented message kind)
    POST /_fake/value-error               a value-level error webhook (`value.errors`)
    POST /_fake/outage                    the API down from now: {"duration_s", "mode"}

`/_fake/inbound` takes `{"from", "kind", "phone_number_id", "text", "payload", "reply_id",
"description", "emoji", "reply_to", "new_wa_id", "unsupported_type", "delay_s",
"timestamp"}`; only
`from` is required. `from` is normalised to the user's WhatsApp ID; `phone_number_id`
defaults to the last number that wrote to the user; `reply_to` is a wamid or "last" (the
last message that number sent the user), and taps (button, button_reply, list_reply)
default to "last". `timestamp` (Unix seconds) stamps the message with a time other than
now: for tests that run dripline on an injected clock and play users on it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dripline.fake.payloads import Inbound
from dripline.fake.rules import wa_id_for
from dripline.fake.state import FakeState
from dripline.fake.validate import digits
from dripline.fake.webhooks import WebhookSender

__all__ = ["Control"]

_UNKNOWN_NUMBER = "000000000000000"
_STR_FIELDS = ("text", "payload", "reply_id", "description", "emoji", "new_wa_id")


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


class Control:
    """Handlers for `/_fake/*`."""

    def __init__(self, state: FakeState, sender: WebhookSender) -> None:
        self.state = state
        self.sender = sender

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/_fake/stats", self.stats)
        router.add_get("/_fake/messages", self.messages)
        router.add_post("/_fake/reset", self.reset)
        router.add_post("/_fake/inbound", self.inbound)
        router.add_post("/_fake/value-error", self.value_error)
        router.add_post("/_fake/outage", self.outage)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.snapshot(self.sender.pending))

    async def messages(self, request: web.Request) -> web.Response:
        to = request.query.get("to")
        items = self.state.messages
        if to is not None:
            wanted = {digits(to), wa_id_for(to, self.state.config.brazil_ninth_digit)}
            items = [m for m in items if m.to in wanted or m.wa_id in wanted]
        limit = request.query.get("limit")
        if limit is not None and limit.isdigit():
            items = items[-int(limit) :] if int(limit) else []
        return web.json_response([m.as_dict() for m in items])

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        self.sender.clear()
        return web.json_response({"reset": True})

    async def _body(self, request: web.Request) -> dict[str, Any] | None:
        try:
            data = await request.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def inbound(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        if data is None or not isinstance(data.get("from"), str) or not digits(data["from"]):
            return _bad("body must be a JSON object with at least a `from` phone number")
        state = self.state
        user = wa_id_for(data["from"], state.config.brazil_ninth_digit)
        number = str(data.get("phone_number_id") or state.last_number.get(user, _UNKNOWN_NUMBER))
        kind = str(data.get("kind", "text"))
        fields = {k: str(data[k]) for k in _STR_FIELDS if data.get(k) is not None}
        if kind == "text":
            fields.setdefault("text", "hi")
        reply_to = data.get("reply_to")
        if reply_to is None and kind in ("button", "button_reply", "list_reply"):
            reply_to = "last"
        if reply_to == "last":
            reply_to = state.last_sent.get((number, user))
            if reply_to is None:
                return _bad(f"number {number} has sent {user} nothing to reply to")
        inbound = Inbound(
            kind=kind,
            reply_to=str(reply_to) if reply_to is not None else None,
            unsupported_type=str(data.get("unsupported_type", "edit")),
            **fields,
        )
        problem = inbound.problem()
        if problem is not None:
            return _bad(problem)
        try:
            delay_s = float(data.get("delay_s", 0.0))
        except (TypeError, ValueError):
            return _bad("delay_s must be a number of seconds")
        stamp = data.get("timestamp")
        if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int)):
            return _bad("timestamp must be Unix seconds (an integer)")
        self.sender.schedule_inbound(number, user, inbound, delay_s, stamp=stamp)
        return web.json_response(
            {"queued": True, "from": user, "phone_number_id": number, "kind": kind}
        )

    async def value_error(self, request: web.Request) -> web.Response:
        data = await self._body(request) or {}
        code = data.get("code", 130429)
        if not isinstance(code, int):
            return _bad("code must be an integer error code")
        number = str(data.get("phone_number_id", _UNKNOWN_NUMBER))
        details = data.get("details")
        self.sender.schedule_value_error(number, code, str(details) if details else None)
        return web.json_response({"queued": bool(self.state.config.webhook_url), "code": code})

    async def outage(self, request: web.Request) -> web.Response:
        """Start an outage now (the chaos benchmarks take the API down mid-run; the
        `--outage-start-s` flag needs the moment at launch). `mode`: "503" (bare HTTP
        503) or "reset" (connections reset), as `--outage-mode`."""
        data = await self._body(request) or {}
        duration = data.get("duration_s")
        if isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0:
            return _bad("duration_s must be a number of seconds >= 0")
        mode = data.get("mode", self.state.config.outage_mode)
        if mode not in ("503", "reset"):
            return _bad('mode must be "503" or "reset"')
        self.state.config.outage_mode = str(mode)
        self.state.start_outage(float(duration))
        return web.json_response({"outage_s": float(duration), "mode": mode})
