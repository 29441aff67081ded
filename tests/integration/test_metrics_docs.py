"""The Grafana dashboard and the operations guide name metrics that really exist, and the
guide documents every metric dripline exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from dripline.metrics import PrometheusObserver
from dripline.metrics_export import BacklogCollector
from dripline.metrics_senders import SenderCollector
from dripline.store import open_store

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\bdripline_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_created", "_total")


def _family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


async def _exported(sqlite_url: str) -> set[str]:
    registry = CollectorRegistry()
    PrometheusObserver(registry)
    registry.register(SenderCollector())  # a worker's per-number metrics (`dripline run`)
    store = await open_store(sqlite_url, pool_size=2)
    try:
        await BacklogCollector(store, registry).refresh()
        families = list(registry.collect())
    finally:
        await store.close()
    # Family names: counters without `_total`, histograms without their sample suffixes.
    return {f.name for f in families if f.name.startswith("dripline_")}


async def test_grafana_dashboard_uses_exported_metrics(sqlite_url: str) -> None:
    exported = await _exported(sqlite_url)
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {_family(n) for e in exprs for n in NAME.findall(e)}
    assert used, "no dripline metric in the dashboard"
    assert used <= exported, f"unknown metrics: {sorted(used - exported)}"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


async def test_operations_guide_documents_every_metric(sqlite_url: str) -> None:
    exported = await _exported(sqlite_url)
    guide = (DOCS / "operations.md").read_text()
    mentioned = {_family(n) for n in NAME.findall(guide)}
    assert exported <= mentioned, f"undocumented: {sorted(exported - mentioned)}"
    assert mentioned <= exported, f"documented but not exported: {sorted(mentioned - exported)}"
