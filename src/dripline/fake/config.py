"""What the fake Cloud API does: limits, latency, faults and webhooks, as one object."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dripline.fake.rules import BrazilRule, WindowMode, throughput_level_for
from dripline.fake.templates import TemplateRegistry

__all__ = ["FakeConfig", "lognormal_params"]

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile


@dataclass(slots=True)
class FakeConfig:
    """Every knob of the fake. Fractions are probabilities in [0, 1]; 0 disables.

    Defaults mirror Meta (docs/fake-cloud-api.md cites each): 80 msg/s per number with
    about one second of burst; the pair limit of one message per 6 s per recipient with
    bursts up to 45; free-form messages outside the 24-hour window accepted, then failed
    with 131047 by webhook; only the registered templates; WhatsApp IDs that differ from
    the number sent for Brazil, Mexico and Argentina.
    """

    # Auth: requests must carry `Authorization: Bearer <access_token>`.
    access_token: str = "test-token"  # noqa: S105 (a fake credential for a fake API)
    # Throughput per phone number id (token bucket); 0 disables it.
    rate_per_s: float = 80.0
    burst: float | None = None  # bucket size; None = one second's worth (rate_per_s)
    # Numbers with a limit of their own ([TP]: throughput is per business phone number,
    # so two numbers of one account can be on different levels): phone number id ->
    # messages per second (0: unlimited). Others get `rate_per_s`.
    number_rates: dict[str, float] = field(default_factory=dict)
    # Pair limit per (phone number id, recipient); pair_interval_s=0 disables it.
    pair_interval_s: float = 6.0
    pair_burst: int = 45
    # The 24-hour customer-service window per (phone number id, user) for free-form
    # messages: "async" accepts then fails them by webhook (131047), "sync" refuses
    # them at once, "off" has no window (benchmarks of raw throughput only).
    window: WindowMode = "async"
    window_s: float = 24 * 3600.0
    # Approved templates; others get 132001, wrong parameter counts 132000. None accepts
    # any template (for callers that test something else).
    templates: TemplateRegistry | None = field(default_factory=TemplateRegistry.default)
    # Brazilian mobiles' WhatsApp ID without the ninth digit: "regional" (area codes 31
    # and up), "all" or "none".
    brazil_ninth_digit: BrazilRule = "regional"
    # Numbers (by a stable hash) that cannot receive messages: accepted, then `failed`
    # with 131026. 0 by default: Meta publishes no rate, and the demo and tests count
    # every message (set it to see how dripline copes).
    undeliverable_fraction: float = 0.0
    # `GET /{phone_number_id}?fields=throughput`: None reports the level of `rate_per_s`.
    throughput_level: str | None = None
    # Latency before answering: fixed, or lognormal with this mean when p99 is given.
    latency_ms: float = 0.0
    latency_p99_ms: float | None = None
    # Faults (checked before validation; such requests are never recorded).
    fail_500_fraction: float = 0.0  # HTTP 500 with an error JSON body (code 1)
    fail_500_bare_fraction: float = 0.0  # HTTP 500 with a plain-text body
    # HTTP 400 with Meta's error body for `inject_code` (any code, known or not: tests
    # of how dripline reacts to a code; the meaning says it was injected).
    inject_code: int | None = None
    inject_code_fraction: float = 0.0
    hang_fraction: float = 0.0  # no answer for hang_s, then the connection is closed
    hang_s: float = 60.0
    reset_fraction: float = 0.0  # connection reset before the message is accepted
    lost_response_fraction: float = 0.0  # accepted and recorded, then connection reset
    outage_start_s: float | None = None  # seconds after start
    outage_duration_s: float = 0.0
    outage_mode: str = "503"  # "503" (bare HTTP 503) or "reset"
    token_expires_after: int | None = None  # accepted messages before 190 for everyone
    # Webhooks.
    webhook_url: str | None = None
    app_secret: str = ""
    sent_delay_s: float = 0.05
    delivered_delay_s: float = 0.2
    read_delay_s: float = 1.0
    read_fraction: float = 0.5
    reply_fraction: float = 0.0  # recipients (by hash) who answer every message
    reply_context_fraction: float = 0.5  # replies that quote our message (`context`)
    value_error_fraction: float = 0.0  # accepted messages followed by a `value.errors`
    value_error_code: int = 130429
    stop_fraction: float = 0.0  # recipients (by hash) who answer "STOP"
    reply_text: str = "yes"
    reply_delay_s: float = 1.0
    duplicate_fraction: float = 0.0  # updates delivered twice
    out_of_order_fraction: float = 0.0  # updates held back so later ones overtake them
    out_of_order_delay_s: float = 1.0
    webhook_batch_max: int = 100
    webhook_flush_s: float = 0.05
    webhook_timeout_s: float = 10.0
    webhook_max_attempts: int = 8
    display_phone_number: str = "15550000000"
    waba_id: str = "100000000000000"
    # Meta echoes biz_opaque_callback_data on sent/delivered/read only; True adds it to
    # `failed` too (a receiver that relies on it there is relying on luck).
    callback_data_on_failed: bool = False
    seed: int | None = None

    @property
    def reported_throughput_level(self) -> str:
        """What `GET /{phone_number_id}?fields=throughput` answers."""
        return self.throughput_level or throughput_level_for(self.rate_per_s)

    def number_rate(self, number: str) -> float:
        """Number `number`'s throughput limit (0: none)."""
        return self.number_rates.get(number, self.rate_per_s)

    def number_level(self, number: str) -> str:
        """The level `GET /{number}?fields=throughput` answers for that number."""
        if number in self.number_rates:
            return throughput_level_for(self.number_rates[number])
        return self.reported_throughput_level

    @property
    def bucket_size(self) -> float:
        """Tokens in a full throughput bucket (at least one request)."""
        return max(self.burst if self.burst is not None else self.rate_per_s, 1.0)

    def number_bucket_size(self, number: str) -> float:
        """A number's bucket: `burst` when set, else one second of its own rate."""
        if number not in self.number_rates or self.burst is not None:
            return self.bucket_size
        return max(self.number_rates[number], 1.0)


def lognormal_params(mean_ms: float, p99_ms: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal latency with the given mean and 99th percentile.

    Solves mean = exp(mu + s^2/2), p99 = exp(mu + z*s) for the smaller root s; a p99
    too far above the mean for any lognormal is clamped to the widest one (s = z).
    """
    if mean_ms <= 0:
        raise ValueError("latency mean must be positive for a lognormal")
    if p99_ms <= mean_ms:
        return math.log(mean_ms), 0.0
    gap = math.log(p99_ms / mean_ms)
    disc = _Z99 * _Z99 - 2.0 * gap
    sigma = _Z99 - math.sqrt(disc) if disc > 0 else _Z99
    return math.log(mean_ms) - sigma * sigma / 2.0, sigma
