"""The dashboard's flow view: each flow's results (`dripline.results`) for the page.

A flow's results are a few `GROUP BY`s and window functions over all of its rows (about
2 to 10 s for a flow of 100,000 conversations on SQLite on a busy 2-core machine), far
more than the dashboard's every-tick numbers cost. So they are refreshed in their own
background task, at most every `REFRESH_S`, and never hold up the sampler's ticks; the
page shows the latest. At most `MAX_FLOWS` flows, by name. Only aggregates: option ids,
numbers and counts, never an answer's text or a phone number.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from dripline.errors import DriplineError
from dripline.flows import FlowRegistry
from dripline.results import flow_results, summarize, to_json
from dripline.store import Store

__all__ = ["MAX_FLOWS", "REFRESH_S", "FlowViews", "flow_views"]

MAX_FLOWS = 10
REFRESH_S = 60.0

log = structlog.get_logger(__name__)


async def flow_views(store: Store, flows: FlowRegistry | None) -> list[dict[str, Any]]:
    """The results of every flow with conversations (at most MAX_FLOWS), by name. A
    flow the server has no definition for (its file was removed) shows its steps by
    number."""
    known = set(flows.names()) if flows is not None else set()
    views = []
    for name in sorted(await store.flows_in_use())[:MAX_FLOWS]:
        if flows is not None and name in known:
            results = await flow_results(store, flows.get(name))
        else:
            results = summarize(await store.flow_results(name), [])
        views.append(to_json(results))
    return views


class FlowViews:
    """The latest flow views, refreshed in the background (see the module docstring)."""

    def __init__(
        self, store: Store, flows: FlowRegistry | None, *, refresh_s: float = REFRESH_S
    ) -> None:
        self.store = store
        self.flows = flows
        self.refresh_s = refresh_s
        self.views: list[dict[str, Any]] = []
        self.ready = asyncio.Event()  # set after the first refresh
        self._task: asyncio.Task[None] | None = None
        self._last = float("-inf")

    def maybe_refresh(self) -> None:
        """Start a refresh when the last one began `refresh_s` ago and none is running."""
        now = time.monotonic()
        if (self._task is not None and not self._task.done()) or now - self._last < self.refresh_s:
            return
        self._last = now
        self._task = asyncio.get_running_loop().create_task(
            self._refresh(), name="dripline-dashboard-flows"
        )

    async def _refresh(self) -> None:
        try:
            self.views = await flow_views(self.store, self.flows)
        except DriplineError as exc:
            log.warning("dashboard flow view failed", error=str(exc))
        finally:
            self.ready.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
