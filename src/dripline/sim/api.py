"""The simulated Cloud API and its users.

`transport(process)` is a dripline `Transport` (the real `CloudApiClient` runs on top
of it), so the client's parsing and classification are exercised too. A request is
written when the transport is called; it reaches the API after half the latency and is
handled there whatever becomes of the caller (a killed worker's request still lands),
and the answer takes the other half. Faults are drawn per request (see `SimConfig`).

An accepted message gets status webhooks (sent, then delivered and maybe read, or
failed 131026 for an undeliverable user, or failed 131000 now and then);
`biz_opaque_callback_data` is echoed on sent/delivered/read. The 24-hour window
(`window_s`, scaled down) opens when a user writes: text outside it is accepted and
failed 131047 by webhook, or refused at once. Users answer delivered questions (or
not), and some send STOP.

Users are identified as Meta may identify them: the send answer's `contacts[0].wa_id`,
statuses' `recipient_id` and inbound `from` carry the user's WhatsApp ID, which differs
from the number sent for Brazilian mobiles outside areas 11-28 and for Mexican numbers
(`dripline.fake.rules.wa_id_for`, with its sources), so dripline's matching of replies
by ID and number variants runs in every seed, and a lost answer leaves the statuses'
`recipient_id` to teach the ID (the wa-id-known invariant).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from dripline.errors import TransportError
from dripline.fake.rules import wa_id_for
from dripline.fake.state import TokenBucket
from dripline.sim import meta
from dripline.sim.channel import WebhookChannel
from dripline.sim.config import SimConfig
from dripline.sim.loop import SimClock
from dripline.sim.process import SimProcess
from dripline.sim.trace import Trace
from dripline.whatsapp.http1 import RawResponse

__all__ = ["Accepted", "SimCloudApi", "User"]

_REFUSE_S = 0.005
PAIR_BURST = 45.0  # Meta: bursts up to 45 messages in one pair interval


@dataclass(slots=True)
class Accepted:
    """A message the API accepted: what the invariants are checked against."""

    wamid: str
    callback: str | None
    number: str
    to: str
    kind: str  # text | template
    at: float  # arrival (acceptance) time
    # The error its later `failed` status carries (the API took it, then refused it).
    refused: int | None = None


@dataclass(slots=True)
class User:
    phone: str
    replies: bool
    undeliverable: bool
    stop_at: float | None  # when the user sends STOP (virtual seconds), if ever


def _number(url: str) -> str:
    """The phone number id in `.../{version}/{phone_number_id}/messages`."""
    return url.rstrip("/").split("/")[-2]


class SimCloudApi:
    def __init__(
        self,
        cfg: SimConfig,
        clock: SimClock,
        rng: random.Random,
        channel: WebhookChannel,
        trace: Trace,
        users: dict[str, User],
    ) -> None:
        self._cfg = cfg
        self._clock = clock
        self._rng = rng
        self._channel = channel
        self._trace = trace
        self.users = users
        self.accepted: list[Accepted] = []
        # When each request left its worker, per number: the rate invariant measures
        # what dripline controls (arrival times also carry the network's jitter).
        self.requests: dict[str, list[float]] = defaultdict(list)
        self._throughput: dict[str, TokenBucket] = {}
        self._pair: dict[tuple[str, str], TokenBucket] = {}
        self._seq = 0
        self._inbound_seq = 0
        self.pair_refusals = 0
        # When each user wrote to each number (the window opens then): a reply is
        # scheduled ahead, so the times may lie in the future.
        self._wrote: dict[tuple[str, str], list[float]] = defaultdict(list)

    # ------------------------------------------------------------ transport
    def transport(self, process: SimProcess) -> Any:
        tag = process.tag
        cfg = self._cfg

        async def call(url: str, body: bytes) -> RawResponse:
            loop = asyncio.get_running_loop()
            process.check(tag)
            self.requests[_number(url)].append(loop.time())
            rng = self._rng
            if rng.random() < cfg.p_connect_refused:
                await asyncio.sleep(_REFUSE_S)
                process.check(tag)
                raise TransportError("cannot connect (simulated refusal)", maybe_sent=False)
            latency = rng.expovariate(1.0 / cfg.latency_mean_s) if cfg.latency_mean_s else 0.0
            fate = self._fate()
            answer: asyncio.Future[RawResponse | None] = loop.create_future()
            # Written now: the API handles it after half the latency, caller or not.
            loop.call_later(latency / 2, self._arrive, url, body, fate, answer)
            timeout = cfg.read_timeout_s
            if latency > timeout or fate == "timeout":
                await asyncio.sleep(timeout)
                process.check(tag)
                raise TransportError("read timeout (simulated)", maybe_sent=True)
            result = await asyncio.shield(answer)
            await asyncio.sleep(latency / 2)
            process.check(tag)
            if result is None:
                raise TransportError("connection lost (simulated)", maybe_sent=True)
            return result

        return call

    def _fate(self) -> str:
        cfg, r = self._cfg, self._rng.random()
        for fate, p in (
            ("drop", cfg.p_drop_before_accept),
            ("lost", cfg.p_lost_response),
            ("timeout", cfg.p_timeout_after_accept),
            ("error_json", cfg.p_error_json),
            ("bare_5xx", cfg.p_bare_5xx),
        ):
            if r < p:
                return fate
            r -= p
        return "ok"

    # --------------------------------------------------------------- the API
    def _arrive(
        self, url: str, body: bytes, fate: str, answer: asyncio.Future[RawResponse | None]
    ) -> None:
        result = self._handle(url, body, fate)
        if not answer.done():
            answer.set_result(result)

    def _take_token(self, number: str, now: float) -> bool:
        """Meta's throughput per number (130429 over it), a second's worth of burst."""
        bucket = self._throughput.get(number)
        if bucket is None:
            rate = self._cfg.api_rate_per_s
            bucket = self._throughput[number] = TokenBucket(rate, rate, now)
        return bucket.take(now)

    def _take_pair(self, number: str, to: str, now: float) -> bool:
        """Meta's pair limit: one message per interval to a user, bursts of PAIR_BURST
        borrowing from future quota (131056 over it)."""
        bucket = self._pair.get((number, to))
        if bucket is None:
            bucket = TokenBucket(1.0 / self._cfg.pair_interval_s, PAIR_BURST, now)
            self._pair[(number, to)] = bucket
        return bucket.take(now)

    def _handle(self, url: str, body: bytes, fate: str) -> RawResponse | None:
        now = self._clock.monotonic()
        number = _number(url)
        request = json.loads(body)
        to = str(request.get("to", "")).lstrip("+")
        callback = request.get("biz_opaque_callback_data")
        what = f"{number}->{to} cb={callback}"
        if fate == "drop":
            self._trace.add(now, f"api dropped {what}")
            return None
        if fate == "error_json":
            self._trace.add(now, f"api 500 {what}")
            return 500, meta.error_body(131000, "Something went wrong"), None
        if fate == "bare_5xx":
            self._trace.add(now, f"api 503 {what}")
            return 503, b"", None
        if not self._take_token(number, now):
            self._trace.add(now, f"api 130429 {what}")
            return 400, meta.error_body(130429, "Rate limit hit"), None
        if not self._take_pair(number, to, now):
            self.pair_refusals += 1
            self._trace.add(now, f"api 131056 {what}")
            return 400, meta.error_body(131056, "Pair rate limit hit"), None
        kind = str(request.get("type", "text"))
        refused: tuple[int, str] | None = None
        user = self.users.get("+" + to)
        if kind != "template" and not self._window_open(number, to, now):
            # [SM] outside the window only templates; [EC] 131047, synchronously or by
            # webhook after acceptance.
            if self._rng.random() < self._cfg.p_window_sync:
                self._trace.add(now, f"api 131047 {what}")
                return 400, meta.error_body(131047, "Re-engagement message"), None
            refused = (131047, "Re-engagement message")
        elif user is not None and user.undeliverable:
            refused = (131026, "Message undeliverable")
        elif self._rng.random() < self._cfg.p_async_transient:
            refused = (131000, "Something went wrong")
        self._seq += 1
        wamid = f"wamid.SIM{self._seq:06d}"
        code = refused[0] if refused else None
        self.accepted.append(Accepted(wamid, callback, number, to, kind, now, code))
        self._trace.add(now, f"api accepted {what} {wamid} ({fate}) refused={code}")
        self._schedule_statuses(number, to, wamid, callback, refused)
        if fate in ("lost", "timeout"):
            return None
        return 200, meta.send_answer("+" + to, wa_id_for(to), wamid), None

    def _window_open(self, number: str, to: str, now: float) -> bool:
        return any(0.0 <= now - t < self._cfg.window_s for t in self._wrote[(number, to)])

    # ------------------------------------------------------------- webhooks
    def _schedule_statuses(
        self,
        number: str,
        to: str,
        wamid: str,
        callback: str | None,
        refused: tuple[int, str] | None,
    ) -> None:
        cfg = self._cfg
        if not cfg.statuses:
            return
        rng = self._rng
        user = self.users.get("+" + to)
        base = self._clock.monotonic()
        t_sent = rng.uniform(0.0, cfg.status_delay_s)

        def status(name: str, delay: float, error: tuple[int, str] | None = None) -> None:
            stamp = int(self._clock.epoch.timestamp() + base + delay)
            data = callback if name != "failed" else None
            value = meta.status_value(
                number,
                wamid=wamid,
                status=name,
                timestamp=stamp,
                recipient_id=wa_id_for(to),
                callback_data=data,
                error=error,
            )
            self._channel.post(value, delay, f"{name}:{wamid}")

        if refused is not None and refused[0] == 131047:
            status("failed", t_sent, refused)  # never sent: no `sent` first
            return
        status("sent", t_sent)
        if refused is not None:
            status("failed", t_sent + rng.uniform(0.0, 1.0), refused)
            return
        t_delivered = t_sent + rng.uniform(0.0, cfg.status_delay_s)
        status("delivered", t_delivered)
        if rng.random() < 0.5:
            status("read", t_delivered + rng.uniform(0.0, 2.0))
        if user is not None and user.replies:
            self.reply(
                number, user, "yes", t_delivered + rng.uniform(0.0, cfg.reply_delay_s), wamid
            )

    def reply(
        self, number: str, user: User, text: str, delay: float, context: str | None = None
    ) -> None:
        self._inbound_seq += 1
        now = self._clock.monotonic()
        self._wrote[(number, user.phone.lstrip("+"))].append(now + delay)
        stamp = int(self._clock.epoch.timestamp() + now + delay)
        value = meta.inbound_value(
            number,
            wamid=f"wamid.IN{self._inbound_seq:06d}",
            wa_id=wa_id_for(user.phone),
            timestamp=stamp,
            text=text,
            context_id=context,
        )
        self._channel.post(value, delay, f"in:{user.phone}:{text}")
