"""`dripline plan`: the seed's tuning guide as a tool.

A deterministic simulation of the dispatcher's policies (`simulate`), the guide's
tables recomputed (`comparison_table`, `summary_table`), and a search for the smallest
settings meeting a lag target (`recommend`). Pure functions: the CLI does the I/O.

To compare a prediction with a real run, build the same three inputs the dispatcher
saw and call `simulate(settings, latency, arrivals)`; `SimResult.drain_s`,
`send_rate_per_s` (first to last send, as the benchmarks count) and the lag
percentiles are the numbers to check. Where CPU can bind (a shared or small machine,
a high rate), give the settings a `CpuBudget` of measured CPU per message and cores.
"""

from __future__ import annotations

from dripline.planner.cpu import CpuBudget, available_cores
from dripline.planner.model import Arrivals, LatencyModel, PlanSettings, Schedule, SimResult
from dripline.planner.recommend import Recommendation, recommend
from dripline.planner.seed_guide import (
    Cell,
    SeedTable,
    comparison_table,
    summary_table,
    wave_vs_plimit,
)
from dripline.planner.simulate import capacity_per_s, percentile, simulate

__all__ = [
    "Arrivals",
    "Cell",
    "CpuBudget",
    "LatencyModel",
    "PlanSettings",
    "Recommendation",
    "Schedule",
    "SeedTable",
    "SimResult",
    "available_cores",
    "capacity_per_s",
    "comparison_table",
    "percentile",
    "recommend",
    "simulate",
    "summary_table",
    "wave_vs_plimit",
]
