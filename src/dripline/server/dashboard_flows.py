"""The dashboard's flow view: each flow's results (`dripline.results`) for the page.

The sampler refreshes it on its slow ticks (every `slow_every` samples): a flow's
results are a few `GROUP BY`s over its rows, more than the every-tick numbers cost.
At most `MAX_FLOWS` flows, by name. Only aggregates: option ids, numbers and counts
from the flow's definition and the answers, never an answer's text or a phone number.
"""

from __future__ import annotations

from typing import Any

from dripline.flows import FlowRegistry
from dripline.results import flow_results, summarize, to_json
from dripline.store import Store

__all__ = ["MAX_FLOWS", "flow_views"]

MAX_FLOWS = 10


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
