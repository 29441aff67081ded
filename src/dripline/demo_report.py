"""`dripline demo`'s last screens: the throughput summary and the answers phase's results
(the table `dripline results` prints, from the same code)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dripline.results_report import duration, render

if TYPE_CHECKING:
    from dripline.demo import DemoReport
    from dripline.demo_answers import AnswersReport

__all__ = ["render_answers", "render_report"]


def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render_report(report: DemoReport, console: Console) -> None:
    """The end-of-demo summary as a table."""
    t = Table(title="dripline demo: summary (measured at the fake Cloud API)", show_header=True)
    t.add_column("")
    t.add_column("dripline", justify="right")
    t.add_column("seed design (every 5 min, 30 rows, 5 at a time)", justify="right")
    total = report.conversations + report.stream
    t.add_row("messages", f"{total:,}", f"{total:,}")
    t.add_row(
        "backlog of " + f"{report.conversations:,} drained in",
        _hours(report.backlog_drain_s),
        f"{_hours(report.seed_drain_s)} ({report.seed_runs:,} runs)",
    )
    ratio = report.backlog_throughput_per_s / report.rate_per_s if report.rate_per_s else 0
    t.add_row(
        "throughput",
        f"{report.backlog_throughput_per_s:g} msg/s "
        f"({ratio:.0%} of the {report.rate_per_s:g}/s limit)",
        f"{30 / 300:g} msg/s (8,640 a day)",
    )
    b, s = report.backlog_lag_s, report.stream_lag_s
    t.add_row("lag, backlog (p50 / p99)", f"{b['p50']:.1f} s / {b['p99']:.1f} s", "")
    t.add_row(
        "lag, on-time stream (p50 / p99 / max)",
        f"{s['p50'] * 1000:.0f} ms / {s['p99'] * 1000:.0f} ms / {s['max'] * 1000:.0f} ms",
        f"p99 {_hours(report.seed_lag_p99_s)}",
    )
    t.add_row("duplicates / missing", f"{report.duplicates} / {report.missing}", "")
    fails = ", ".join(f"{k}: {v}" for k, v in sorted(report.failed_by_class.items())) or "none"
    t.add_row("errors by class", fails, "")
    t.add_row("retries / 130429 responses", f"{report.retries} / {report.throttled_responses}", "")
    console.print(t)
    if report.next_follow_up_at:
        console.print(
            f"{report.follow_ups_scheduled:,} conversations wait for their next question "
            f"(the first at {report.next_follow_up_at:%H:%M:%S} UTC); "
            f"`dripline run` keeps sending them. Data: {report.database}"
        )


def render_answers(report: AnswersReport, console: Console, database: str) -> None:
    """The answers phase: what ran, with time compressed, then the flow's results table."""
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(report.replies_by_kind.items()))
    console.print(
        f"\n[bold]Answers: {report.users:,} simulated users through the {report.flow} flow[/] "
        f"(time compressed: {duration(report.simulated_s)} of the flow's time in "
        f"{report.elapsed_s:.0f} s; dripline ran on a moved clock, every message and "
        f"reply went over HTTP, replies as signed webhooks: {kinds})"
    )
    # The plain-text table `dripline results` prints: never wrapped to the terminal.
    console.print(escape(render(report.results)), end="", highlight=False, soft_wrap=True)
    console.print(
        f"[dim]The same table again: dripline results {report.flow} --database-url {database}[/]",
        soft_wrap=True,
    )
