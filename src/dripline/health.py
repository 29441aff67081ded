"""Liveness and readiness: what `/healthz` and `/readyz` answer, on `dripline serve` and
on `dripline run --metrics-port`.

`/healthz` says the process answers (no I/O). `/readyz` says it can do its work:

    database   reachable (one short read within `PROBE_TIMEOUT_S`)
    schema     at the revision this dripline needs (`dripline db upgrade` after a deploy)
    breaker    the dispatcher's circuit breaker closed (only where a dispatcher runs)
    inbox      the oldest stored webhook not waiting longer than `ready_max_inbox_lag_s`
               (only where the inbox processor runs: `dripline serve`)

`decide()` is the decision, pure; `ReadinessProbe` gathers its inputs. The probe is
public (orchestrators call it without a token), so it is single-flight and reuses an
answer for `REUSE_S`: a flood of probes costs at most one short read a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dripline.errors import DriplineError
from dripline.store import Store, StoreHealth
from dripline.store.migrate import head_revision

__all__ = [
    "PROBE_TIMEOUT_S",
    "BreakerWatch",
    "Check",
    "Readiness",
    "ReadinessInputs",
    "ReadinessProbe",
    "decide",
]

# Under the 5 s that Docker's HEALTHCHECK (as shipped) and Render wait for an answer.
PROBE_TIMEOUT_S = 3.0
REUSE_S = 1.0

OK, FAILING, SKIPPED = "ok", "failing", "skipped"


@dataclass(frozen=True, slots=True)
class Check:
    status: str  # ok, failing, skipped
    detail: str


@dataclass(frozen=True, slots=True)
class ReadinessInputs:
    """What the decision looks at. `health` None: the database did not answer
    (`database_error` says why); `breaker_open` None: no dispatcher in this process;
    `inbox_checked` False: no inbox processor in this process."""

    now: datetime
    head: str
    health: StoreHealth | None
    database_error: str | None = None
    breaker_open: bool | None = None
    breaker_reason: str | None = None
    inbox_checked: bool = True
    max_inbox_lag_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: dict[str, Check]

    @property
    def ready(self) -> bool:
        return not self.failing

    @property
    def failing(self) -> list[str]:
        return [name for name, check in self.checks.items() if check.status == FAILING]

    def document(self) -> dict[str, Any]:
        """The JSON body of `/readyz` (200 when ready, else 503)."""
        return {
            "status": "ready" if self.ready else "not ready",
            "failing": self.failing,
            "checks": {
                name: {"status": c.status, "detail": c.detail} for name, c in self.checks.items()
            },
        }


def decide(i: ReadinessInputs) -> Readiness:
    """Each check's status and a sentence an operator can act on."""
    checks: dict[str, Check] = {}
    h = i.health
    if h is None:
        checks["database"] = Check(FAILING, f"no answer: {i.database_error or 'unknown error'}")
        unknown = Check(SKIPPED, "not checked: the database did not answer")
        checks["schema"] = unknown
    else:
        checks["database"] = Check(OK, "answered")
        if h.schema_revision == i.head:
            checks["schema"] = Check(OK, f"at {i.head}")
        else:
            at = h.schema_revision or "no dripline schema"
            needs = f"this dripline needs {i.head}: run `dripline db upgrade`"
            checks["schema"] = Check(FAILING, f"database at {at}, {needs}")
    if i.breaker_open is None:
        checks["breaker"] = Check(SKIPPED, "no dispatcher in this process")
    elif i.breaker_open:
        checks["breaker"] = Check(FAILING, f"open, sending stopped: {i.breaker_reason or '?'}")
    else:
        checks["breaker"] = Check(OK, "closed")
    if not i.inbox_checked:
        checks["inbox"] = Check(SKIPPED, "webhooks are applied by `dripline serve`")
    elif h is None:
        checks["inbox"] = Check(SKIPPED, "not checked: the database did not answer")
    elif h.inbox_oldest_waiting_at is None:
        checks["inbox"] = Check(OK, "nothing waiting")
    else:
        lag = max(0.0, (i.now - h.inbox_oldest_waiting_at).total_seconds())
        status = FAILING if lag > i.max_inbox_lag_s else OK
        checks["inbox"] = Check(
            status,
            f"{h.inbox_waiting} webhook(s) waiting, the oldest for {lag:.0f} s "
            f"(limit {i.max_inbox_lag_s:g} s)",
        )
    return Readiness(checks)


class BreakerWatch:
    """A dispatch observer that only remembers the circuit breaker's state."""

    def __init__(self) -> None:
        self.is_open = False
        self.reason: str | None = None

    def on_breaker(self, is_open: bool, reason: str | None) -> None:
        self.is_open, self.reason = is_open, reason

    def on_claim(self, claimed: int, duration_s: float) -> None: ...
    def on_record(self, written: int, duration_s: float) -> None: ...
    def on_sent(self, latency_s: float, lag_s: float) -> None: ...
    def on_failure(self, error_class: str, code: int | None, action: str) -> None: ...
    def on_in_flight(self, in_flight: int) -> None: ...
    def on_limits(self, concurrency: int, rate_per_s: float) -> None: ...


@dataclass
class ReadinessProbe:
    """Gathers the inputs from this process and its store, then `decide()`s."""

    store: Store
    max_inbox_lag_s: float
    breaker: BreakerWatch | None = None
    inbox_checked: bool = True
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    reuse_s: float = REUSE_S
    _last: tuple[float, Readiness] | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def check(self) -> Readiness:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < self.reuse_s:
                return self._last[1]
            health: StoreHealth | None = None
            error: str | None = None
            try:
                health = await asyncio.wait_for(self.store.health(), PROBE_TIMEOUT_S)
            except TimeoutError:
                error = f"no answer within {PROBE_TIMEOUT_S:g} s"
            except DriplineError as exc:
                error = str(exc)
            result = decide(
                ReadinessInputs(
                    now=self.clock(),
                    head=head_revision(),
                    health=health,
                    database_error=error,
                    breaker_open=None if self.breaker is None else self.breaker.is_open,
                    breaker_reason=None if self.breaker is None else self.breaker.reason,
                    inbox_checked=self.inbox_checked,
                    max_inbox_lag_s=self.max_inbox_lag_s,
                )
            )
            self._last = (time.monotonic(), result)
            return result
