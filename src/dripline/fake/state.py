"""The fake's memory: accepted messages, counters, rate-limit buckets and open windows."""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from dripline.fake.config import FakeConfig
from dripline.fake.rules import WindowBook

__all__ = ["AcceptedMessage", "FakeState", "FakeStats", "TokenBucket"]


class TokenBucket:
    """Classic token bucket: `rate_per_s` tokens a second, at most `capacity` saved."""

    __slots__ = ("capacity", "last", "rate_per_s", "tokens")

    def __init__(self, rate_per_s: float, capacity: float, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = capacity
        self.last = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means over the limit."""
        tokens = self.tokens + (now - self.last) * self.rate_per_s
        if tokens > self.capacity:
            tokens = self.capacity
        self.last = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


@dataclass(slots=True)
class AcceptedMessage:
    """One message the fake answered 200 for."""

    wamid: str
    phone_number_id: str
    to: str  # the digits of the number sent
    type: str
    body: str  # the text, or the template name
    callback_data: str | None
    received_monotonic: float
    received_wall: float  # after the simulated latency, when the answer is decided
    # When the request reached the handler, before any simulated latency: the send's
    # start as the API saw it (the benchmarks' lag is this minus the due time).
    arrived_wall: float = 0.0
    wa_id: str = ""  # the user's WhatsApp ID (may differ from `to`)
    failure_code: int | None = None  # reported `failed` by webhook with this code
    language: str | None = None  # a template's language
    in_window: bool = False  # the customer-service window was open when it was sent
    # (id, title, description) of each option the user can tap (interactive buttons or
    # list rows; a template's quick-reply payloads as id and title).
    choices: tuple[tuple[str, str, str | None], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "wamid": self.wamid,
            "phone_number_id": self.phone_number_id,
            "to": self.to,
            "wa_id": self.wa_id,
            "type": self.type,
            "body": self.body,
            "language": self.language,
            "callback_data": self.callback_data,
            "failure_code": self.failure_code,
            "choices": [{"id": i, "title": t, "description": d} for i, t, d in self.choices],
            "received_monotonic": self.received_monotonic,
            "received_wall": self.received_wall,
            "arrived_wall": self.arrived_wall,
        }


@dataclass(slots=True)
class FakeStats:
    requests: int = 0
    accepted: int = 0
    hangs: int = 0
    resets: int = 0
    lost_responses: int = 0
    outage_rejections: int = 0
    webhook_posts: int = 0
    webhook_updates: int = 0
    webhook_failures: int = 0
    webhook_statuses: int = 0
    webhook_inbound: int = 0
    webhook_value_errors: int = 0
    number_reads: int = 0  # GET /{phone_number_id} (e.g. ?fields=throughput)


class FakeState:
    """Everything the fake remembers; tests read it directly through `fake.state`."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.started_monotonic = time.monotonic()
        # Unique across restarts of the fake, so wamids never collide between runs.
        self._prefix = secrets.token_hex(4).upper()
        self._counter = 0
        self.reset()

    def reset(self) -> None:
        """Forget messages, counters, buckets and windows (wamids stay unique)."""
        self.messages: list[AcceptedMessage] = []
        self.stats = FakeStats()
        self.errors_by_code: Counter[int] = Counter()
        # Accepted (200), then reported `failed` by webhook with this code.
        self.failed_by_code: Counter[int] = Counter()
        self.seen: Counter[tuple[str, str]] = Counter()
        self.buckets: dict[str, TokenBucket] = {}
        self.pair_buckets: dict[tuple[str, str], TokenBucket] = {}
        self.windows = WindowBook(self.config.window_s)
        # The latest message each number sent each user: replies quote it, and a user's
        # message without a number goes to the last number that wrote to them.
        self.last_sent: dict[tuple[str, str], str] = {}
        self.last_number: dict[str, str] = {}
        # Messages users sent (wamid -> (number, user)), and those a number marked read,
        # in order (`read_receipts.py`).
        self.received: dict[str, tuple[str, str]] = {}
        self.marked_read: list[str] = []
        self.outage_until: float | None = None
        if self.config.outage_start_s is not None:
            start = self.started_monotonic + self.config.outage_start_s
            self.outage_from: float | None = start
            self.outage_until = start + self.config.outage_duration_s
        else:
            self.outage_from = None

    @property
    def expected_auth(self) -> str:
        return f"Bearer {self.config.access_token}"

    def next_id(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter:010d}"

    def new_wamid(self) -> str:
        return f"wamid.HBgL{self.next_id()}"

    def start_outage(self, duration_s: float, now: float | None = None) -> None:
        """Begin an outage now (tests use this instead of a start offset)."""
        start = time.monotonic() if now is None else now
        self.outage_from = start
        self.outage_until = start + duration_s

    def in_outage(self, now: float) -> bool:
        return (
            self.outage_from is not None
            and self.outage_until is not None
            and self.outage_from <= now < self.outage_until
        )

    def open_window(self, phone_number_id: str, wa_id: str, now: float | None = None) -> None:
        """The user wrote to this number: free-form messages are allowed for `window_s`."""
        self.windows.window_s = self.config.window_s
        self.windows.user_wrote(phone_number_id, wa_id, time.monotonic() if now is None else now)

    def window_open(self, phone_number_id: str, wa_id: str, now: float) -> bool:
        self.windows.window_s = self.config.window_s
        return self.windows.is_open(phone_number_id, wa_id, now)

    def take_throughput(self, phone_number_id: str, now: float) -> bool:
        cfg = self.config
        rate = cfg.number_rate(phone_number_id)  # each number its own bucket [TP]
        if rate <= 0:
            return True
        bucket = self.buckets.get(phone_number_id)
        if bucket is None:
            bucket = self.buckets[phone_number_id] = TokenBucket(
                rate, cfg.number_bucket_size(phone_number_id), now
            )
        return bucket.take(now)

    def take_pair(self, phone_number_id: str, user: str, now: float) -> bool:
        cfg = self.config
        if cfg.pair_interval_s <= 0:
            return True
        key = (phone_number_id, user)
        bucket = self.pair_buckets.get(key)
        if bucket is None:
            bucket = self.pair_buckets[key] = TokenBucket(
                1.0 / cfg.pair_interval_s, float(max(cfg.pair_burst, 1)), now
            )
        return bucket.take(now)

    def record(self, message: AcceptedMessage, duplicate_key: str) -> None:
        self.messages.append(message)
        self.stats.accepted += 1
        self.seen[(message.to, duplicate_key)] += 1
        self.last_sent[(message.phone_number_id, message.wa_id)] = message.wamid
        self.last_number[message.wa_id] = message.phone_number_id
        if message.failure_code is not None:
            self.failed_by_code[message.failure_code] += 1

    def snapshot(self, pending_webhooks: int = 0) -> dict[str, Any]:
        """The `/_fake/stats` document."""
        s = self.stats
        dups = {key: n for key, n in self.seen.items() if n > 1}
        return {
            "requests": s.requests,
            "accepted": s.accepted,
            "throttled": self.errors_by_code.get(130429, 0),
            "pair_throttled": self.errors_by_code.get(131056, 0),
            "window_rejected": self.errors_by_code.get(131047, 0),
            "errors_by_code": {str(code): n for code, n in sorted(self.errors_by_code.items())},
            "failed_by_code": {str(code): n for code, n in sorted(self.failed_by_code.items())},
            "hangs": s.hangs,
            "resets": s.resets,
            "lost_responses": s.lost_responses,
            "outage_rejections": s.outage_rejections,
            "duplicates": sum(n - 1 for n in dups.values()),
            "duplicate_keys": len(dups),
            "duplicate_examples": [
                {"to": to, "body": body, "count": n} for (to, body), n in list(dups.items())[:20]
            ],
            "webhooks": {
                "posts": s.webhook_posts,
                "updates": s.webhook_updates,
                "statuses": s.webhook_statuses,
                "inbound": s.webhook_inbound,
                "value_errors": s.webhook_value_errors,
                "failures": s.webhook_failures,
                "pending": pending_webhooks,
            },
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
        }
