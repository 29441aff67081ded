"""The composition root: build store, client, flows and dispatcher from settings."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from dripline.dispatcher.engine import Dispatcher, RunSummary
from dripline.dispatcher.stats import DispatchObserver
from dripline.flows import FlowRegistry, load_flows
from dripline.logs import configure_logging
from dripline.settings import Settings
from dripline.store import Store, open_store
from dripline.whatsapp.client import CloudApiClient

__all__ = ["Runtime", "configure_from_settings", "open_runtime", "run_dispatcher"]


def configure_from_settings(settings: Settings) -> None:
    """Logging as the settings say, with every configured secret scrubbed."""
    configure_logging(
        fmt=settings.log_format, level=settings.log_level, secrets=settings.secret_values()
    )


@dataclass
class Runtime:
    settings: Settings
    store: Store
    client: CloudApiClient
    flows: FlowRegistry


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, pool_size: int = 1, client: CloudApiClient | None = None
) -> AsyncIterator[Runtime]:
    """Open the store and the client; close both on exit.

    A dispatcher needs one pooled connection (claims, reservations and result writes
    take turns, each a single short transaction) plus, on PostgreSQL, the LISTEN one.
    """
    flows = load_flows(settings.flows_dir)
    store = await open_store(
        settings.database_url, pool_size=pool_size, pooler=settings.db_pooler, dispatcher=True
    )
    own_client = client is None
    api = client or CloudApiClient.from_settings(settings)
    try:
        yield Runtime(settings=settings, store=store, client=api, flows=flows)
    finally:
        if own_client:
            await api.close()
        await store.close()


async def run_dispatcher(
    settings: Settings,
    *,
    once: bool = False,
    max_seconds: float | None = None,
    observer: DispatchObserver | None = None,
    on_start: Callable[[Dispatcher], None] | None = None,
) -> RunSummary:
    """Run one dispatcher until SIGINT/SIGTERM (or, with `once`, until drained).
    `on_start` sees the dispatcher before it runs (e.g. to export its per-number state)."""
    async with open_runtime(settings) as rt:
        dispatcher = Dispatcher(
            store=rt.store,
            client=rt.client,
            flows=rt.flows,
            settings=settings,
            observer=observer,
        )
        if on_start is not None:
            on_start(dispatcher)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, dispatcher.request_stop)
        try:
            return await dispatcher.run(once=once, max_seconds=max_seconds)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
