"""`/healthz` and `/readyz` on the metrics port of `dripline run --metrics-port`.

The metrics server is a WSGI server in a thread (a scrape must answer while the event
loop is busy sending), so the routes here are WSGI too. `/readyz` runs the readiness
probe on the dispatcher's event loop and waits for it: a loop too stuck to answer
within the probe's time is itself a reason not to be ready. Every other path serves the
metrics, as before.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from dripline.health import PROBE_TIMEOUT_S, ReadinessProbe

__all__ = ["WsgiApp", "health_routes", "with_routes"]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_STATUS = {200: "200 OK", 503: "503 Service Unavailable"}


def _json(start_response: Callable[..., Any], code: int, body: Mapping[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        _STATUS[code],
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def health_routes(probe: ReadinessProbe, loop: asyncio.AbstractEventLoop) -> dict[str, WsgiApp]:
    """The two routes, bound to `probe` running on `loop`."""

    def healthz(_environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        return _json(start_response, 200, {"status": "ok"})

    def readyz(_environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        future = asyncio.run_coroutine_threadsafe(probe.check(), loop)
        try:
            readiness = future.result(PROBE_TIMEOUT_S + 1)
        except (FutureTimeout, RuntimeError) as exc:
            future.cancel()
            detail = "the event loop did not answer" if isinstance(exc, FutureTimeout) else str(exc)
            body = {
                "status": "not ready",
                "failing": ["event_loop"],
                "checks": {"event_loop": {"status": "failing", "detail": detail}},
            }
            return _json(start_response, 503, body)
        return _json(start_response, 200 if readiness.ready else 503, readiness.document())

    return {"/healthz": healthz, "/readyz": readyz}


def with_routes(fallback: WsgiApp, routes: Mapping[str, WsgiApp]) -> WsgiApp:
    """A WSGI app serving `routes` by exact path, and `fallback` for the rest."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        route = routes.get(environ.get("PATH_INFO", ""))
        return (route or fallback)(environ, start_response)

    return app
