"""The daily retention pass `dripline serve` runs, and `dripline db prune` (docs/data.md).

Raw webhook bodies hold phone numbers and message texts; once applied they are only
evidence for the operator. After `retention_days` they are deleted, with the texts of
inbound messages that answered nothing. Answers stay (they are the product).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import structlog

from dripline.clock import Clock
from dripline.errors import StoreError
from dripline.store import PruneResult, Store

__all__ = ["DAY_S", "RetentionPass", "cutoff", "prune_now"]

log = structlog.get_logger(__name__)

DAY_S = 86_400.0


def cutoff(now: datetime, days: int) -> datetime:
    """What is older than this goes."""
    return now - timedelta(days=days)


async def prune_now(store: Store, now: datetime, days: int) -> PruneResult:
    return await store.prune(cutoff(now, days))


class RetentionPass:
    """Prunes once shortly after start, then every `interval_s` (a day), until stopped.
    A failed pass (the database away) is logged and tried again at the next one."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        days: int,
        *,
        first_after_s: float = 60.0,
        interval_s: float = DAY_S,
    ) -> None:
        self.store, self.clock, self.days = store, clock, days
        self.first_after_s, self.interval_s = first_after_s, interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="dripline-retention"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self.first_after_s)
        while True:
            try:
                result = await prune_now(self.store, self.clock.now(), self.days)
                log.info(
                    "retention.pruned",
                    inbox_rows=result.inbox_rows,
                    inbound_bodies=result.inbound_bodies,
                    older_than_days=self.days,
                )
            except StoreError as exc:
                log.warning("retention.failed", error=str(exc)[:200])
            await asyncio.sleep(self.interval_s)
