"""`dripline serve`: the enrollment API and the Cloud API webhook in one FastAPI app.

    app = create_app(settings)                      # opens its own store at startup
    await serve(settings)                           # uvicorn, until SIGINT/SIGTERM
    await serve_with_dispatcher(settings)           # `dripline run --serve`

The app's lifespan starts four background tasks in the server process: the inbox
writer (group-commits webhook bodies), the inbox processor (applies them in batches), the
daily retention pass (`dripline.inbox.retention`) and the intake heartbeat (records
when webhooks could be received: the dispatcher's evidence about unknown sends counts
only then). The dashboard and metrics routers are included when their modules exist.

For other routers, the app exposes `app.state.store`, `app.state.flows`,
`app.state.settings` and `app.state.clock` once started.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dripline import __version__
from dripline.clock import Clock, SystemClock
from dripline.errors import DatabaseUnavailable, StoreError
from dripline.flows import FlowRegistry, load_flows
from dripline.inbox import InboxProcessor
from dripline.inbox.intake import IntakeHeartbeat
from dripline.inbox.receipts import ReadReceipts
from dripline.inbox.retention import RetentionPass
from dripline.server.api import ErrorOut, build_router
from dripline.server.auth import TokenAuth, check_auth_settings
from dripline.server.guard import AccessGuard, AccessPolicy
from dripline.server.health import router as health_router
from dripline.server.limits import server_limits
from dripline.server.results_api import build_results_router
from dripline.server.token import ensure_api_token
from dripline.server.webhook import InboxWriter, build_webhook_router
from dripline.settings import Settings
from dripline.store import Store, open_store

__all__ = [
    "OPTIONAL_ROUTERS",
    "create_app",
    "serve",
    "serve_app",
    "serve_with_dispatcher",
    "uvicorn_config",
]

log = structlog.get_logger(__name__)

# Routers written elsewhere, included when their module exists.
OPTIONAL_ROUTERS = ("dripline.server.dashboard", "dripline.server.metrics_http")
# The server's own pool: API reads, the intake writer and the processor, each short.
SERVER_POOL_SIZE = 4


@dataclass
class _Parts:
    store: Store | None = None
    writer: InboxWriter | None = None
    processor: InboxProcessor | None = None


def _optional_router(module_name: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None  # not written yet
        raise
    return getattr(module, "router", None)


def _one_line(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    more = len(errors) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{loc}: {first.get('msg', 'invalid')}{suffix}"


def _read_receipts(settings: Settings, flows: FlowRegistry) -> ReadReceipts | None:
    """A Cloud API client for read receipts when some flow asks for them (none else)."""
    if not any(flows.get(name).read_receipts for name in flows.names()):
        return None
    from dripline.whatsapp import CloudApiClient

    return ReadReceipts(CloudApiClient.from_settings(settings))


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    flows: FlowRegistry | None = None,
    clock: Clock | None = None,
    process_inbox: bool = True,
) -> FastAPI:
    """The dripline HTTP app. Raises ConfigError when it must not start (no API token:
    see `dripline.server.token.ensure_api_token`; broken flow files).

    `store`: use this open store (the caller closes it); default: open
    `settings.database_url` at startup, close at shutdown. `process_inbox=False` leaves
    the inbox to the caller (tests drain it with `app.state.processor.drain()`).
    """
    token = check_auth_settings(settings)
    registry: FlowRegistry = flows if flows is not None else load_flows(settings.flows_dir)
    clk: Clock = clock or SystemClock()
    parts = _Parts(store=store)

    def get_store() -> Store:
        assert parts.store is not None, "the app has not started"
        return parts.store

    def get_writer() -> InboxWriter:
        if parts.writer is None:
            raise RuntimeError("the app has not started")
        return parts.writer

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = parts.store is None
        if own:
            parts.store = await open_store(
                settings.database_url, pool_size=SERVER_POOL_SIZE, pooler=settings.db_pooler
            )
        assert parts.store is not None
        receipts = _read_receipts(settings, registry)
        processor = InboxProcessor(
            parts.store,
            registry,
            clk,
            opt_out_keywords=settings.opt_out_keywords,
            max_attempts=settings.max_attempts,
            retry_base_s=settings.retry_base_s,
            retry_cap_s=settings.retry_cap_s,
            default_sender=settings.whatsapp_phone_number_id,
            receipts=receipts,
            senders=settings.sender_ids,
        )
        writer = InboxWriter(
            parts.store,
            clk,
            on_commit=processor.notify,
            max_queued_bytes=settings.webhook_max_queued_bytes,
        )
        parts.processor, parts.writer = processor, writer
        app.state.store = parts.store
        app.state.processor = processor
        writer.start()
        intake = asyncio.get_running_loop().create_task(
            IntakeHeartbeat(parts.store, clk).run(), name="dripline-intake-heartbeat"
        )
        retention = RetentionPass(parts.store, clk, settings.retention_days)  # daily prune
        if process_inbox:
            retention.start()
        if process_inbox:
            processor.start()
        if not settings.whatsapp_app_secret.get_secret_value():
            log.warning("server.no_app_secret", hint="POST /webhook answers 401 to everything")
        try:
            yield
        finally:
            intake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await intake
            await retention.stop()
            await writer.stop()
            await processor.stop()
            if receipts is not None:
                await receipts.close()
            if own:
                await parts.store.close()
                parts.store = None

    app = FastAPI(
        title="dripline",
        version=__version__,
        summary="Scheduled WhatsApp question flows: enrollment API and Cloud API webhook.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.flows = registry
    app.state.clock = clk

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.exception_handler(StoreError)
    async def _store_error(_request: Request, exc: StoreError) -> JSONResponse:
        # Not the caller's fault and not a bug in the request: say so, ask for a retry.
        unavailable = isinstance(exc, DatabaseUnavailable)
        log.warning("server.store_error", error=str(exc)[:200])
        detail = "the database is unavailable; retry" if unavailable else "database error; retry"
        return JSONResponse({"detail": detail}, status_code=503)

    # Every route's access rules (token, Host, Origin, JSON only): see server/guard.py.
    app.add_middleware(
        AccessGuard,
        policy=AccessPolicy.from_settings(settings, token),
        body_timeout_s=settings.server_body_timeout_s,
    )
    auth = TokenAuth(token)
    app.include_router(
        build_router(
            get_store=get_store,
            get_flows=lambda: registry,
            clock=clk,
            auth=auth,
            senders=settings.sender_ids,
        )
    )
    app.include_router(
        build_results_router(get_store=get_store, get_flows=lambda: registry, auth=auth)
    )
    app.include_router(build_webhook_router(settings, get_writer))

    # /healthz and /readyz: public, see server/health.py.
    app.include_router(health_router)

    for module_name in OPTIONAL_ROUTERS:
        router = _optional_router(module_name)
        if router is not None:
            app.include_router(router)

    # ErrorOut is referenced by the webhook's hand-written responses: make sure the
    # schema component exists even if no route declared it as a model.
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original_openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorOut", ErrorOut.model_json_schema())
        # Our 422s carry one-line `detail` (the handler above), not FastAPI's list.
        error_ref = {"$ref": "#/components/schemas/ErrorOut"}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                response = operation.get("responses", {}).get("422")
                if response is not None:
                    response["content"] = {"application/json": {"schema": error_ref}}
                    response.setdefault("description", "invalid input; `detail` names it")
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn settings for dripline: our logging, no access log (one line per webhook
    delivery would drown everything else)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
        **server_limits(settings),
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


async def serve(settings: Settings, **overrides: Any) -> None:
    """Run the server until SIGINT/SIGTERM (uvicorn handles the signals)."""
    settings = ensure_api_token(settings).settings
    await serve_app(create_app(settings), settings, **overrides)


class _Server(uvicorn.Server):
    """uvicorn, except that SIGTERM, the ordinary stop of every process manager
    (Docker, systemd, Render), ends in exit code 0 after the graceful shutdown: uvicorn
    re-raises the signal it caught, which makes the process die *by* SIGTERM. SIGINT is
    still re-raised (Ctrl-C ends with "interrupted", 130)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


async def serve_app(app: FastAPI, settings: Settings, **overrides: Any) -> None:
    """Run an app made by `create_app` until SIGINT/SIGTERM."""
    await _Server(uvicorn_config(app, settings, **overrides)).serve()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: `serve_with_dispatcher` owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_with_dispatcher(
    settings: Settings, *, max_seconds: float | None = None, **overrides: Any
) -> Any:
    """`dripline run --serve`: the dispatcher and the server in one process.

    Both stop together: on SIGINT/SIGTERM, or when either ends (the dispatcher's
    circuit breaker, a port already in use). Returns the dispatcher's `RunSummary`.
    The server opens its own small connection pool, so API reads never queue behind
    the dispatcher's connection.
    """
    from dripline.dispatcher.engine import Dispatcher
    from dripline.dispatcher.stats import FanOut
    from dripline.health import BreakerWatch
    from dripline.metrics import PrometheusObserver, new_registry
    from dripline.runtime import open_runtime

    settings = ensure_api_token(settings).settings
    async with open_runtime(settings) as rt:
        # One registry: /metrics shows this process's dispatcher counters too.
        registry = new_registry()
        breaker = BreakerWatch()  # for /readyz
        dispatcher = Dispatcher(
            store=rt.store,
            client=rt.client,
            flows=rt.flows,
            settings=settings,
            observer=FanOut(PrometheusObserver(registry), breaker),
        )
        app = create_app(settings, flows=rt.flows)
        app.state.metrics_registry = registry
        app.state.breaker = breaker
        server = _EmbeddedServer(uvicorn_config(app, settings, **overrides))

        def stop() -> None:
            server.should_exit = True
            dispatcher.request_stop()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop)
        server_task = asyncio.create_task(server.serve(), name="dripline-server")
        dispatch_task = asyncio.create_task(
            dispatcher.run(max_seconds=max_seconds), name="dripline-dispatcher"
        )
        try:
            await asyncio.wait({server_task, dispatch_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop()
            await asyncio.gather(server_task, dispatch_task, return_exceptions=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        if server_task.exception() is not None:
            raise server_task.exception()  # type: ignore[misc]
        return dispatch_task.result()
