"""Reads each number's throughput tier and sets its send rate from it.

At start and after a burst of 130429 (`throughput.refresh_due`), for every configured
number whose rate the operator did not set (`rate_per_s`, or its own in `senders`). The
decisions are `dripline.whatsapp.throughput` (pure); this is the I/O: one GET per number
through the client, and the result applied: the default number's to the context (its
rate, `dripline status`'s tier row), every other's to its token bucket (`SenderPacing.
set_number_rate`). A read that fails keeps the rate in force (80/s before any read):
sending never waits on it.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, runtime_checkable

import structlog

from dripline.dispatcher.context import Context
from dripline.dispatcher.pacing import SenderPacing
from dripline.errors import TransportError, WhatsAppError
from dripline.settings import Policy
from dripline.whatsapp.throughput import REFRESH_STREAK, TierRate, effective_rate, refresh_due

__all__ = ["ThroughputSource", "TierReader"]

log = structlog.get_logger("dripline.dispatcher")


@runtime_checkable
class ThroughputSource(Protocol):
    """A client that can read the tier (`CloudApiClient`; the simulator's cannot)."""

    async def throughput_level(self, sender: str | None = None) -> str | None: ...


class TierReader:
    def __init__(self, ctx: Context, client: object) -> None:
        self._ctx = ctx
        self._source = client if isinstance(client, ThroughputSource) else None
        self.last_read_at: float | None = None  # the last read a burst caused
        self._throttles: deque[float] = deque(maxlen=REFRESH_STREAK)
        self._reading = False
        self.pacing: SenderPacing | None = None  # set by the engine: other numbers' rates
        self.levels: dict[str, TierRate] = {}  # every other number's last read

    @property
    def active(self) -> bool:
        """Whether the tier decides the rate at all (not with a set rate, nor the seed's
        cron policy, which has no rate limiter)."""
        ctx = self._ctx
        return ctx.settings.rate_from_tier and ctx.policy is not Policy.SEED_CRON

    async def read(self, why: str) -> None:
        ctx = self._ctx
        if ctx.policy is Policy.SEED_CRON or self._reading:
            return
        self._reading = True
        if why != "start":
            self.last_read_at = ctx.loop_time()
        level = ctx.tier.level if ctx.tier is not None else None
        try:
            if self._source is not None:
                level = await self._source.throughput_level()
        except (WhatsAppError, TransportError) as exc:
            log.warning("could not read the throughput tier; keeping the rate", error=str(exc))
        finally:
            self._reading = False
        settings = ctx.settings
        default = settings.whatsapp_phone_number_id
        own = settings.sender_rate(default)
        self.apply(
            effective_rate(own or settings.rate_per_s, operator_set=own is not None, level=level),
            why,
        )
        if self._source is not None and self.pacing is not None:
            for number in settings.sender_ids[1:]:
                if settings.sender_rate(number) is None:
                    await self._read_other(self._source, self.pacing, number, why)

    async def _read_other(
        self, source: ThroughputSource, pacing: SenderPacing, number: str, why: str
    ) -> None:
        """Another configured number's tier, applied to its token bucket."""
        ctx = self._ctx
        old = self.levels.get(number)
        try:
            level = await source.throughput_level(number)
        except (WhatsAppError, TransportError) as exc:
            log.warning(
                "could not read the throughput tier; keeping the rate",
                sender=number,
                error=str(exc),
            )
            return
        tier = effective_rate(ctx.settings.rate_per_s, operator_set=False, level=level)
        self.levels[number] = tier
        pacing.set_number_rate(number, tier.rate_per_s)
        ctx.rate_share = pacing.total_ceiling(ctx.settings.sender_ids)
        if old is None or (old.level, old.rate_per_s) != (tier.level, tier.rate_per_s):
            log.info(
                "throughput tier",
                sender=number,
                level=tier.level,
                rate_per_s=tier.rate_per_s,
                rate_from=tier.source,
                why=why,
            )

    def apply(self, tier: TierRate, why: str) -> None:
        ctx = self._ctx
        old = ctx.tier
        ctx.tier = tier
        ctx.rate_per_s = tier.rate_per_s
        ctx.observer.on_tier(tier.level, tier.rate_per_s, tier.source)
        if old is None or (old.level, old.rate_per_s) != (tier.level, tier.rate_per_s):
            log.info(
                "throughput tier",
                level=tier.level,
                rate_per_s=tier.rate_per_s,
                rate_from=tier.source,
                why=why,
            )

    def after_throttle(self, streak: int) -> None:
        """A throttle event (a new pause; `streak` in a row): read the tier again when
        a burst of them says it may have changed."""
        ctx = self._ctx
        now = ctx.loop_time()
        self._throttles.append(now)
        if self.active and refresh_due(self._throttles, now, self.last_read_at):
            self.last_read_at = now  # one read per burst, even while it is in flight
            ctx.spawn(self.read("throttled"), "tier-read")
