"""The webhook receiver's heartbeat: when could webhooks reach us?

`dripline serve` records, about once a second, that its webhook endpoint is up
(`Store.record_intake`). The dispatcher trusts status webhooks as evidence about an
unknown send only while the intake was up throughout (see
`dripline.dispatcher.reconcile.proven_unaccepted`): when the receiver was down, Meta
queued deliveries and retries them on its own schedule, so the fresh ones that arrive
first say nothing about older ones still waiting.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import datetime

import structlog

from dripline.clock import Clock
from dripline.errors import DatabaseUnavailable, StoreError
from dripline.store.base import Store

__all__ = [
    "INTAKE_HEARTBEAT_S",
    "INTAKE_KEEP_S",
    "INTAKE_STALL_S",
    "INTAKE_TOLERANCE_S",
    "IntakeHeartbeat",
]

log = structlog.get_logger(__name__)

INTAKE_HEARTBEAT_S = 1.0
# A receiver counts as up until this long after its last heartbeat (one missed beat).
INTAKE_TOLERANCE_S = 1.5 * INTAKE_HEARTBEAT_S
# A live receiver whose beat is merely late (its event loop or its database write held
# up by a busy machine) was still receiving: connections wait in the listen backlog and
# are answered when it catches up. Up to this lateness its run goes on; beyond it, or
# after a failed beat (webhooks could not be stored either), a new run starts and the
# gap stays on record. 5 s: the strictest delivery timeout a WhatsApp provider
# publishes (360dialog: a 200 within 5 s); Meta's own guidance is a median under 250 ms
# and under 1% over 1 s, which a stall this short delays, not loses.
INTAKE_STALL_S = 5.0
# Runs older than this are forgotten: an unknown send this old is long settled.
INTAKE_KEEP_S = 7 * 24 * 3600.0


def intake_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class IntakeHeartbeat:
    """Records this receiver's uptime until stopped (cancel the task).

    Uptime is a list of segments. A beat after a failed one (the database was
    unreachable, so webhooks could not be stored either), or more than INTAKE_STALL_S
    after the last successful one, starts a new segment, and the gap stays on record.
    A beat that is only late continues the segment: counting each busy second as
    downtime left unknown sends unprovable for good, and they were given up (lost)
    after `max_attempts` checks on a loaded machine (the chaos benchmark's API outage).
    """

    def __init__(self, store: Store, clock: Clock, *, ident: str | None = None) -> None:
        self.store = store
        self.clock = clock
        self._base = ident or intake_id()
        self._segment = 0
        self.id = self._base
        self.started_at = clock.now()
        self._last_ok: datetime | None = None
        self._failed = False

    async def beat(self) -> None:
        now = self.clock.now()
        last = self._last_ok
        if last is not None and (self._failed or (now - last).total_seconds() > INTAKE_STALL_S):
            self._segment += 1
            self.id = f"{self._base}.{self._segment}"
            self.started_at = now
        try:
            await self.store.record_intake(self.id, self.started_at, now, keep_s=INTAKE_KEEP_S)
        except BaseException:
            self._failed = True
            raise
        self._last_ok = now
        self._failed = False

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
            except (DatabaseUnavailable, StoreError, OSError) as exc:
                # A gap in the record is the point: webhooks could not be stored either.
                log.warning("intake heartbeat failed", error=str(exc)[:200])
            await asyncio.sleep(INTAKE_HEARTBEAT_S)
