"""The `--png` chart: drain time and p99 lag against concurrency, a line per batch.

Builds a `matplotlib.figure.Figure` without pyplot (no global state, no GUI backend);
the caller saves it. One row of two panels per load.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from matplotlib.figure import Figure

from dripline.planner.model import SimResult

__all__ = ["grid_figure"]

_MAX_ROWS = 6
# Cron designs solid, continuous ones dashed: they differ by orders of magnitude.
_STYLE = {"seed-cron": "-", "tiers": "-.", "static": "--", "adaptive": ":"}


def grid_figure(results: Sequence[SimResult], title: str = "dripline plan") -> Figure:
    """A figure of drain time and p99 lag (log scale) against concurrency, one line per
    (policy, batch), one row per load (at most six)."""
    loads = list(dict.fromkeys(r.arrivals for r in results))[:_MAX_ROWS] or ["(no load)"]
    fig = Figure(figsize=(11, 3.2 * len(loads) + 0.6), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(len(loads), 2, squeeze=False)
    for row, load in enumerate(loads):
        lines: dict[str, list[SimResult]] = defaultdict(list)
        for r in results:
            if r.arrivals == load:
                key = f"{r.settings.policy.value} batch {r.settings.batch_limit}"
                lines[key].append(r)
        drain_ax, lag_ax = axes[row][0], axes[row][1]
        for key, rs in lines.items():
            rs.sort(key=lambda r: r.settings.concurrency)
            xs = [r.settings.concurrency for r in rs]
            style = _STYLE.get(rs[0].settings.policy.value, "-")
            drain = [max(r.drain_s, 1e-3) for r in rs]
            lag = [max(r.lag_p99_s, 1e-3) for r in rs]
            drain_ax.plot(xs, drain, marker="o", linestyle=style, label=key)
            lag_ax.plot(xs, lag, marker="o", linestyle=style, label=key)
        drain_ax.set_title(f"{load}: time until the last message is sent")
        lag_ax.set_title(f"{load}: p99 lag (send start - due)")
        for ax in (drain_ax, lag_ax):
            ax.set_xlabel("concurrency")
            ax.set_ylabel("seconds")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
        if lines:
            lag_ax.legend(fontsize="small")
    return fig
