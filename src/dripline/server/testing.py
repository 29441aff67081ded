"""Run a dripline app on real loopback HTTP inside the current event loop (tests, tools).

async with running_server(create_app(settings, store=store)) as base_url:
    async with aiohttp.ClientSession() as http:
        await http.get(f"{base_url}/healthz")
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI

from dripline.settings import Settings

__all__ = ["running_server"]


class _QuietServer(uvicorn.Server):
    """No signal handlers: the test runner owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def running_server(
    app: FastAPI, host: str = "127.0.0.1", settings: Settings | None = None
) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; yields its base URL; stops on exit.
    With `settings`, uvicorn runs as `dripline serve` configures it (its limits)."""
    if settings is not None:
        from dripline.server.app import uvicorn_config

        config = uvicorn_config(app, settings, host=host, port=0)
    else:
        config = uvicorn.Config(
            app, host=host, port=0, log_config=None, access_log=False, lifespan="on"
        )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(), name="dripline-test-server")
    try:
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise its error
                raise RuntimeError("the server stopped during startup")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
