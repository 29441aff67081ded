"""`dripline plan --seed-table`: the guide's tables with every cell simulated (split
from `plan.py`, which keeps the options and the other two modes)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dripline.cli.common import console, print_json
from dripline.planner import (
    Arrivals,
    LatencyModel,
    PlanSettings,
    comparison_table,
    simulate,
    summary_table,
    wave_vs_plimit,
)
from dripline.planner.seed_guide import (
    GUIDE_LATENCY_S,
    GUIDE_QUERY_S,
    SEED_COLUMNS,
    SeedTable,
)
from dripline.settings import Policy

__all__ = ["seed_table"]


def _out() -> Console:
    """The shared console on a terminal; piped, a wide one (see `plan._out`)."""
    return console if console.is_terminal else Console(width=max(console.width, 160))


def _fmt_exact(seconds: float) -> str:
    # Seconds to a tenth, as the guide writes them, so 310.1 s reads against ~25s.
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _fmt_stated(seconds: float) -> str:
    # The guide's own spelling: ~100ms, ~2.5s, ~25s.
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:g}s"


def _seed_table_rich(table: SeedTable, compare: bool) -> Table:
    out = Table(title=table.title, title_justify="left")
    out.add_column("batch", justify="right")
    out.add_column("conc.", justify="right")
    for label, _ in SEED_COLUMNS:
        out.add_column(label)
    for batch, conc, cells in table.rows:
        row: list[Text | str] = [str(batch), str(conc)]
        for cell in cells:
            computed = cell.text(table.unit)
            if not compare or cell.stated_s is None:
                row.append(computed)
                continue
            stated = f"~{_fmt_stated(cell.stated_s)}"
            if cell.differs:
                row.append(Text(f"{stated} → {computed} ✗", style="bold red"))
            else:
                row.append(Text(f"{stated} → {computed} ✓", style="green"))
        out.add_row(*row)
    return out


def seed_table(rate: float, as_json: bool) -> None:
    cron = comparison_table(continuous=False, rate_per_s=rate)
    cont = comparison_table(continuous=True, rate_per_s=rate)
    summary = summary_table(rate)
    waves = wave_vs_plimit()
    seed_day = simulate(
        PlanSettings(policy=Policy.SEED_CRON, rate_per_s=rate),
        LatencyModel.constant(GUIDE_LATENCY_S),
        Arrivals.backlog(1),
    )
    cont_day = simulate(
        PlanSettings(policy=Policy.STATIC, rate_per_s=rate, claim_overhead_s=GUIDE_QUERY_S),
        LatencyModel.constant(GUIDE_LATENCY_S),
        Arrivals.backlog(1),
    )
    if as_json:
        print_json(
            {
                "latency_s": GUIDE_LATENCY_S,
                "query_s": GUIDE_QUERY_S,
                "rate_per_s": rate,
                "seed_cron": cron.to_dict(),
                "continuous": cont.to_dict(),
                "summary_30_5": [r.to_dict() for r in summary],
                "plimit_vs_waves": waves,
                "max_per_day": {
                    "seed_cron_30_5": seed_day.max_per_day,
                    "continuous_30_5": cont_day.max_per_day,
                },
            }
        )
        return
    console.print(
        f"Each send takes {GUIDE_LATENCY_S:g} s and the due query {GUIDE_QUERY_S * 1000:.0f} ms "
        "(the guide's figures). Cells: the guide's time → the simulated time until the "
        "last message is sent, counted from when they fall due; ✗ marks a guide cell off "
        "by more than max(0.2 s, 5%)."
    )
    out_console = _out()
    out_console.print(_seed_table_rich(cron, compare=True))
    out_console.print(_seed_table_rich(cont, compare=False))
    out = Table(title="Summary Table: 30/5 Configuration (seed cron)", title_justify="left")
    for col in ("msgs", "guide", "computed", "batches", "runs", "continuous", "guide's note"):
        out.add_column(col, justify="right" if col != "guide's note" else "left")
    for r in summary:
        style = "bold red" if r.differs else "green"
        mark = "✗" if r.differs else "✓"
        out.add_row(
            str(r.messages),
            f"~{_fmt_stated(r.stated_s)}",
            Text(f"{_fmt_exact(r.result.drain_s)} {mark}", style=style),
            f"{r.result.waves} (guide {r.stated_batches})",
            str(r.result.runs),
            _fmt_exact(r.continuous_s),
            r.note,
        )
    out_console.print(out)
    console.print(
        f"Most messages per day at 30/5: seed cron {seed_day.max_per_day:,} "
        f"(30 per 300 s); continuous {cont_day.max_per_day:,} ({cont_day.binding})."
    )
    console.print(
        f"Waves vs pLimit, {waves['messages']:.0f} messages at {waves['concurrency']:.0f} "
        f"concurrent with lognormal latency (mean {waves['latency_mean_s']:g} s, "
        f"p99 {waves['latency_p99_s']:g} s): pLimit {waves['plimit_mean_s']:.1f} s, "
        f"the guide's waves {waves['waves_mean_s']:.1f} s (a wave waits for its slowest "
        "send). With constant latency both give 15 s."
    )
