"""`GET /healthz` and `GET /readyz` of `dripline serve` (and `run --serve`).

Both are public: orchestrators (Docker, Render, Kubernetes) call them without a token,
and they show nothing secret. The decision is `dripline.health.decide`; this module only
finds the app's store, dispatcher breaker and settings, and answers 200 or 503.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dripline.health import BreakerWatch, ReadinessProbe

__all__ = ["router"]

# Both paths are in `dripline.server.guard.PUBLIC_PATHS`: no token, any Host.

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers (no I/O)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _probe(request: Request) -> ReadinessProbe | None:
    state = request.app.state
    store = getattr(state, "store", None)
    if store is None:
        return None  # not started (or already stopped)
    probe: ReadinessProbe | None = getattr(state, "readiness", None)
    if probe is not None and probe.store is store:
        return probe
    breaker: BreakerWatch | None = getattr(state, "breaker", None)
    processor = getattr(state, "processor", None)
    probe = ReadinessProbe(
        store,
        max_inbox_lag_s=state.settings.ready_max_inbox_lag_s,
        breaker=breaker,
        inbox_checked=processor is not None,
    )
    state.readiness = probe
    return probe


@router.get(
    "/readyz",
    summary="Readiness: database reachable, schema current, breaker closed, inbox applied",
    responses={503: {"description": "not ready; `failing` names the checks that failed"}},
)
async def readyz(request: Request) -> Any:
    probe = _probe(request)
    if probe is None:
        return JSONResponse(
            {"status": "not ready", "failing": ["starting"], "checks": {}}, status_code=503
        )
    readiness = await probe.check()
    return JSONResponse(readiness.document(), status_code=200 if readiness.ready else 503)
