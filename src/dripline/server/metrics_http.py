"""`GET /metrics` of `dripline serve`: the Prometheus text format.

The app may set `app.state.metrics_registry` (a registry a `PrometheusObserver` reports
to, when the server runs a dispatcher in-process); otherwise the router makes its own on
first use. Either way it adds a `BacklogCollector` over `app.state.store`, refreshed on
scrape at most every few seconds, so several Prometheus replicas scraping at once still
cost one backlog query per interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

from dripline.metrics import new_registry
from dripline.metrics_export import BacklogCollector

__all__ = ["MetricsState", "metrics_state", "router"]

router = APIRouter()


@dataclass
class MetricsState:
    registry: CollectorRegistry
    backlog: BacklogCollector | None


def metrics_state(request: Request) -> MetricsState:
    """The app's registry and backlog collector, made on first use."""
    app_state = request.app.state
    existing: MetricsState | None = getattr(app_state, "metrics", None)
    if existing is not None:
        return existing
    registry: CollectorRegistry | None = getattr(app_state, "metrics_registry", None)
    if registry is None:
        registry = new_registry()
        app_state.metrics_registry = registry
    store = getattr(app_state, "store", None)
    backlog = BacklogCollector(store, registry) if store is not None else None
    state = MetricsState(registry=registry, backlog=backlog)
    app_state.metrics = state
    return state


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Every dripline metric in the Prometheus text exposition format."""
    state = metrics_state(request)
    if state.backlog is not None:
        await state.backlog.refresh_if_stale()
    # Rendering reads /proc for the process collector: keep it off the event loop.
    body = await run_in_threadpool(generate_latest, state.registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
