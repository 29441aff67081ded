"""What the fake Cloud API does: limits, latency, faults and webhooks, as one object."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FakeConfig", "lognormal_params"]

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile


@dataclass(slots=True)
class FakeConfig:
    """Every knob of the fake. Fractions are probabilities in [0, 1]; 0 disables.

    Defaults mirror Meta: 80 msg/s per number with about one second of burst, and the
    pair limit of one message per 6 s per recipient with bursts up to 45.
    """

    # Auth: requests must carry `Authorization: Bearer <access_token>`.
    access_token: str = "test-token"  # noqa: S105 (a fake credential for a fake API)
    # Throughput per phone number id (token bucket); 0 disables it.
    rate_per_s: float = 80.0
    burst: float | None = None  # bucket size; None = one second's worth (rate_per_s)
    # Pair limit per (phone number id, recipient); pair_interval_s=0 disables it.
    pair_interval_s: float = 6.0
    pair_burst: int = 45
    # Free-form messages outside the 24 h window fail with 131047 when enforced.
    enforce_window: bool = False
    window_s: float = 24 * 3600.0
    # Known templates: name -> number of body parameters. None accepts any name.
    templates: Mapping[str, int] | None = None
    # Latency before answering: fixed, or lognormal with this mean when p99 is given.
    latency_ms: float = 0.0
    latency_p99_ms: float | None = None
    # Faults (checked before validation; such requests are never recorded).
    fail_500_fraction: float = 0.0  # HTTP 500 with an error JSON body (code 1)
    fail_500_bare_fraction: float = 0.0  # HTTP 500 with a plain-text body
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
    failed_fraction: float = 0.0  # a `failed` status (131026) instead of `delivered`
    reply_fraction: float = 0.0  # recipients (by hash) who answer every message
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
    callback_data_on_failed: bool = True  # Meta: UNCONFIRMED; either answer is plausible
    seed: int | None = None

    @property
    def bucket_size(self) -> float:
        """Tokens in a full throughput bucket (at least one request)."""
        return max(self.burst if self.burst is not None else self.rate_per_s, 1.0)


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
