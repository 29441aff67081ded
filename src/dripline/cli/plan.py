"""`dripline plan`: the tuning guide as a tool.

Three modes:
  --seed-table   the guide's tables with every cell simulated, wrong ones marked;
  --recommend    the smallest settings that keep p99 lag under a target for a load;
  (default)      a grid of policies x batch x concurrency x loads, as a table, JSON or PNG.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dripline.cli.common import console, handle_errors, print_json
from dripline.errors import ConfigError, DatabaseUnavailable, InputError, StoreError
from dripline.planner import (
    Arrivals,
    CpuBudget,
    LatencyModel,
    PlanSettings,
    SimResult,
    recommend,
    simulate,
)
from dripline.planner.parse import (
    DbLatency,
    parse_duration,
    parse_int_list,
    parse_latency,
    parse_profile,
    parse_rate,
)
from dripline.settings import Policy

_EPILOG = """\
Examples:

  dripline plan --seed-table

  dripline plan --recommend --target-lag 60s --peak "5000/h spike 10x 10m" --rate 80

  dripline plan --policy seed-cron,static --batch 20,30,50 --concurrency 3,5,10
  --backlog 30,50,5000 --latency lognormal:150ms,p99=600ms --png plan.png

  dripline plan --profile spike-day --policy seed-cron,tiers,static --latency 2.5s

  dripline plan --latency db:sqlite:///./dripline.db --backlog 20000

  dripline plan --policy static --batch 1000 --concurrency 100 --rate 1000
  --latency 100ms --backlog 5000 --cpu-ms 0.45 --db-cpu-ms 0.15 --cores 2
"""


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _out() -> Console:
    """The shared console on a terminal; piped, a wide one: a file or pager can take the
    whole table, where rich would squeeze it into 80 columns."""
    return console if console.is_terminal else Console(width=max(console.width, 160))


def _cpu_budget(
    cpu_ms: float | None,
    db_cpu_ms: float,
    api_cpu_ms: float,
    cores: float | None,
    workers: int,
) -> CpuBudget | None:
    """The CPU term from the options; None (no CPU bound) unless --cpu-ms is given."""
    if cpu_ms is None:
        if db_cpu_ms or api_cpu_ms or cores is not None or workers != 1:
            raise InputError(
                "--db-cpu-ms, --api-cpu-ms, --cores and --workers shape the CPU bound, "
                "which needs the dispatcher's CPU per message: give --cpu-ms too"
            )
        return None
    # Default cores: this machine's, as `nproc` counts them (plan where you run).
    n = cores if cores is not None else float(os.cpu_count() or 1)
    try:
        return CpuBudget(
            dispatcher_ms=cpu_ms,
            database_ms=db_cpu_ms,
            api_ms=api_cpu_ms,
            cores=n,
            workers=workers,
            source="" if cores is not None else "this machine's cores",
        )
    except ValueError as exc:
        raise InputError(str(exc), where="--cpu-ms") from None


def _policies(text: str) -> tuple[Policy, ...]:
    out = []
    for part in text.split(","):
        try:
            out.append(Policy(part.strip()))
        except ValueError:
            choices = ", ".join(p.value for p in Policy)
            raise InputError(
                f"{part.strip()!r} is not a policy; use {choices}", where="--policy"
            ) from None
    return tuple(dict.fromkeys(out))


def _latency(text: str) -> LatencyModel:
    spec = parse_latency(text)
    if not isinstance(spec, DbLatency):
        return spec
    from dripline.store.reports import latency_samples_ms

    try:
        samples = asyncio.run(latency_samples_ms(spec.url))
    except DatabaseUnavailable:
        raise  # a service problem (exit 1), not a wrong option
    except (ConfigError, StoreError) as exc:
        raise InputError(str(exc), where="--latency") from None
    if not samples:
        raise InputError(
            "the database has no sent messages with a recorded latency yet; "
            "give a number (150ms) or a distribution instead",
            where="--latency",
        )
    from dripline.store.urls import redact_url

    return LatencyModel.from_samples([ms / 1000 for ms in samples], source=redact_url(spec.url))


# -- --recommend ----------------------------------------------------------------------


def _recommend(
    target_lag: str | None,
    peak: str | None,
    latency: LatencyModel,
    rate: float,
    claim_overhead_s: float,
    seed: int,
    as_json: bool,
    cpu: CpuBudget | None,
) -> None:
    if target_lag is None:
        raise InputError("--recommend needs a lag target, e.g. --target-lag 60s")
    if peak is None:
        raise InputError(
            '--recommend needs a load, e.g. --peak 5000/h or --peak "5000/h spike 10x"'
        )
    target_s = parse_duration(target_lag, "--target-lag")
    arrivals = parse_profile(peak, "--peak")
    rec = recommend(
        target_lag_s=target_s,
        arrivals=arrivals,
        api_rate_per_s=rate,
        latency=latency,
        claim_overhead_s=claim_overhead_s,
        seed=seed,
        cpu=cpu,
    )
    if as_json:
        print_json(rec.to_dict())
        return
    st, res = rec.settings, rec.result
    head = "Recommended" if rec.feasible else "[bold red]Cannot meet the target[/]; best effort"
    console.print(
        f"{head} for {arrivals.label} (peak {rec.peak_arrival_per_s:.1f}/s), "
        f"latency {latency.describe()}, p99 lag ≤ {_fmt_s(target_s)}:"
    )
    console.print(
        f"  [bold]--policy static --batch {st.batch_limit} --concurrency {st.concurrency} "
        f"--rate {st.rate_per_s:g}[/]"
    )
    for reason in rec.reasons:
        console.print(f"  - {reason}")
    console.print(
        f"  simulated: lag p50 {_fmt_s(res.lag_p50_s)}, p99 {_fmt_s(res.lag_p99_s)}, "
        f"max {_fmt_s(res.lag_max_s)}; {res.sent:,} sent, last at {_fmt_s(res.drain_s)}"
    )
    base = rec.baseline
    console.print(
        f"  the seed's 30/5 every 5 min on the same load: lag p99 {_fmt_s(base.lag_p99_s)}, "
        f"last message after {_fmt_s(base.drain_s)}"
    )


# -- grid -----------------------------------------------------------------------------


def _grid_table(results: list[SimResult]) -> Table:
    loads = list(dict.fromkeys(r.arrivals for r in results))
    one_load = len(loads) == 1
    title = f"dripline plan: {loads[0]}" if one_load else "dripline plan"
    out = Table(title=title, title_justify="left")
    cols = (
        ("policy", "left"),
        ("batch/conc", "right"),
        *(() if one_load else (("load", "left"),)),
        ("runs", "right"),
        ("time/run", "right"),
        ("drain", "right"),
        ("msg/s", "right"),
        ("max/day", "right"),
        ("lag p50/p99/max", "right"),
        ("DB", "right"),
        ("head-room", "right"),
        ("bound by", "left"),
    )
    for col, justify in cols:
        out.add_column(col, justify=justify)
    for r in results:
        st = r.settings
        name = st.policy.value
        if st.policy is Policy.TIERS or (st.schedule and st.schedule != st.effective_schedule):
            name += f" ({st.effective_schedule})"
        limits = "tiers" if st.policy is Policy.TIERS else f"{st.batch_limit}/{st.concurrency}"
        headroom = "-" if r.rate_headroom is None else f"{r.rate_headroom:.0%}"
        runs = f"{r.runs:,}" + (f" ({r.skipped_runs} skipped)" if r.skipped_runs else "")
        out.add_row(
            name,
            limits,
            *(() if one_load else (r.arrivals,)),
            runs,
            _fmt_s(r.run_time_mean_s),
            _fmt_s(r.drain_s),
            f"{r.throughput_per_s:.2f}",
            f"{r.max_per_day:,}",
            f"{_fmt_s(r.lag_p50_s)} / {_fmt_s(r.lag_p99_s)} / {_fmt_s(r.lag_max_s)}",
            str(r.db_connections),
            headroom,
            r.binding + (f" ({r.throttled:,} throttled)" if r.throttled else ""),
        )
    return out


@handle_errors
def plan(
    seed_table: Annotated[
        bool,
        typer.Option(
            "--seed-table",
            help="Print the guide's Performance Comparison and 30/5 Summary tables with "
            "every cell simulated (2.5 s per send, 100 ms query), wrong cells marked, and "
            "the continuous dispatcher beside them.",
        ),
    ] = False,
    do_recommend: Annotated[
        bool,
        typer.Option(
            "--recommend",
            help="Find the smallest batch, concurrency and rate that keep the p99 lag "
            "under --target-lag for the --peak load, and say which limit binds.",
        ),
    ] = False,
    target_lag: Annotated[
        str | None, typer.Option(help="Lag target for --recommend: 60s, 500ms, 5m.")
    ] = None,
    peak: Annotated[
        str | None,
        typer.Option(help='Load for --recommend: "5000/h", "80/s spike 3x 5m", spike-day.'),
    ] = None,
    latency: Annotated[
        str | None,
        typer.Option(
            help="Per-send latency: 150ms | 2.5s | lognormal:150ms,p99=600ms | "
            "db:<database url> (measured from messages.latency_ms). "
            "Default 150ms; --seed-table always uses the guide's 2.5s.",
        ),
    ] = None,
    rate: Annotated[
        str, typer.Option(help="The API's rate limit (80/s by default, 1000 upgraded).")
    ] = "80",
    interval: Annotated[str, typer.Option(help="Cron interval for seed-cron/tiers.")] = "300s",
    batch: Annotated[str, typer.Option(help="Batch limits to try, comma-separated.")] = "30",
    concurrency: Annotated[
        str, typer.Option(help="Concurrency limits to try, comma-separated.")
    ] = "5",
    backlog: Annotated[
        str | None,
        typer.Option(help="Backlog sizes due at once, comma-separated (default 50,5000)."),
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            help="Arrival profile instead of a backlog (repeatable): typical-day, "
            'spike-day, "5000/h", "5000/h for 2h", "5000/h spike 10x 10m", '
            '"5000/h spike 10x 10m at 30m" (spike centred unless at is given).',
        ),
    ] = None,
    policy: Annotated[
        str,
        typer.Option(help="Policies to compare, comma-separated: seed-cron,static,tiers,adaptive."),
    ] = "seed-cron,static",
    schedule: Annotated[
        str | None,
        typer.Option(
            help="Force cron or continuous (default: seed-cron and tiers on cron, "
            "static and adaptive continuous)."
        ),
    ] = None,
    query_time: Annotated[str, typer.Option(help="One cron run's due query.")] = "100ms",
    claim_overhead: Annotated[str, typer.Option(help="One continuous claim round trip.")] = "5ms",
    max_concurrency: Annotated[
        int, typer.Option(min=1, help="Adaptive policy's upper bound.")
    ] = 512,
    server_rate: Annotated[
        str | None,
        typer.Option(
            help="Model an API that throttles above this rate (msg/s); throttled sends "
            "back off and retry."
        ),
    ] = None,
    cpu_ms: Annotated[
        float | None,
        typer.Option(
            "--cpu-ms",
            min=0.0,
            help="The dispatcher's CPU per message sent, in ms, all workers together "
            "(measure it: CPU time of `dripline run` over the messages it sent, start-up "
            "excluded; the benchmarks' cpu_ms_per_msg_net). With it, messages/s are "
            "bounded by --cores / (CPU per message of the dispatcher, database and API), "
            "and by one core per worker. Measured on a 2-core machine: 0.35-0.45 ms at "
            "1,000-2,000/s, 2-7 ms at 10-33/s (bench/README.md): measure at the rate you "
            "plan for. Default: none, CPU is free and never binds.",
        ),
    ] = None,
    db_cpu_ms: Annotated[
        float,
        typer.Option(
            "--db-cpu-ms",
            min=0.0,
            help="The database server's CPU per message when it shares --cores with the "
            "dispatcher (PostgreSQL: 0.15-0.36 ms measured at 1,000-2,000/s). "
            "Default 0: on another machine, or SQLite (inside the dispatcher's figure).",
        ),
    ] = 0.0,
    api_cpu_ms: Annotated[
        float,
        typer.Option(
            "--api-cpu-ms",
            min=0.0,
            help="The API's CPU per message when it shares --cores (the benchmarks' fake: "
            "0.21-0.30 ms). Default 0: Meta's servers.",
        ),
    ] = 0.0,
    cores: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="Cores the dispatcher, database and API share (fractions allowed: what "
            "other work leaves of a shared machine). Needs --cpu-ms. Default: this "
            "machine's cores.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Dispatcher processes; each is one event loop and uses at most one core. "
            "Needs --cpu-ms. Default 1.",
        ),
    ] = 1,
    seed: Annotated[int, typer.Option(help="Random seed (results are deterministic).")] = 0,
    png: Annotated[
        Path | None, typer.Option(help="Write a chart of drain time and p99 lag (PNG).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Plan batch, concurrency and rate: simulate the dispatcher's policies on a load.

    Per setting: time per run, runs needed, time until the last message is sent,
    throughput, the most messages per day it can sustain, lag p50/p99/max (send start
    minus due time), database connections and rate-limit headroom.
    """
    rate_per_s = parse_rate(rate, "--rate")
    if seed_table:
        from dripline.cli.plan_seed import seed_table as show_seed_table

        show_seed_table(rate_per_s, as_json)
        return
    lat = _latency(latency or "150ms")
    claim_s = parse_duration(claim_overhead, "--claim-overhead")
    cpu = _cpu_budget(cpu_ms, db_cpu_ms, api_cpu_ms, cores, workers)
    if do_recommend:
        _recommend(target_lag, peak, lat, rate_per_s, claim_s, seed, as_json, cpu)
        return
    if backlog is not None and profile:
        raise InputError("give --backlog or --profile, not both")
    loads: list[Arrivals] = (
        [parse_profile(p) for p in profile]
        if profile
        else [
            Arrivals.backlog(n)
            for n in parse_int_list(backlog or "50,5000", "--backlog", minimum=0)
        ]
    )
    if schedule not in (None, "cron", "continuous"):
        raise InputError(
            f"{schedule!r} is not a schedule; use cron or continuous", where="--schedule"
        )
    sched: Any = schedule
    base = PlanSettings(
        rate_per_s=rate_per_s,
        interval_s=parse_duration(interval, "--interval"),
        query_s=parse_duration(query_time, "--query-time"),
        claim_overhead_s=claim_s,
        schedule=sched,
        max_concurrency=max_concurrency,
        server_rate_per_s=parse_rate(server_rate, "--server-rate") if server_rate else None,
        cpu=cpu,
    )
    batches = parse_int_list(batch, "--batch")
    concs = parse_int_list(concurrency, "--concurrency")
    results: list[SimResult] = []
    for pol, load in itertools.product(_policies(policy), loads):
        # tiers picks its own batch and concurrency: one row per load is enough.
        grid = [(0, 0)] if pol is Policy.TIERS else list(itertools.product(batches, concs))
        for b, c in grid:
            st = PlanSettings(
                **{
                    **{n: getattr(base, n) for n in base.__dataclass_fields__},
                    "policy": pol,
                    "batch_limit": b or 30,
                    "concurrency": c or 5,
                    "max_concurrency": max(max_concurrency, c),
                }
            )
            results.append(simulate(st, lat, load, seed=seed))
    if png is not None:
        from dripline.planner.chart import grid_figure

        fig = grid_figure(results, title=f"dripline plan — latency {lat.describe()}")
        try:
            fig.savefig(png, dpi=110)
        except OSError as exc:
            raise InputError(f"cannot write {str(png)!r}: {exc.strerror}", where="--png") from None
    if as_json:
        print_json(
            {
                "latency": lat.describe(),
                "latency_mean_s": lat.mean_s,
                "latency_p99_s": lat.p99_s,
                "cpu_limit_per_s": cpu.limit_per_s() if cpu is not None else None,
                "results": [r.to_dict() for r in results],
                "png": str(png) if png else None,
            }
        )
        return
    console.print(f"latency {lat.describe()}, API rate limit {rate_per_s:g}/s")
    if cpu is not None:
        console.print(f"CPU {cpu.describe()}: at most {cpu.limit_per_s():,.0f} msg/s")
    _out().print(_grid_table(results))
    if png is not None:
        console.print(f"chart written to {png}")


def register(app: typer.Typer) -> None:
    """Add `dripline plan` to the CLI."""
    app.command("plan", epilog=_EPILOG)(plan)
