"""`dripline run`: the dispatcher, long-running or once (for an external cron)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from dripline.cli import common
from dripline.cli.common import handle_errors, print_json, settings_from
from dripline.dispatcher.engine import RunSummary
from dripline.settings import Delivery, Policy, Preset, Settings

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="sqlite:///file.db or postgresql://user@host/db."),
]
PolicyOpt = Annotated[
    Policy | None,
    typer.Option(
        help="static: batch/concurrency as set; tiers: the seed guide's backlog tiers; "
        "adaptive: AIMD concurrency; seed-cron: the seed's 5-minute/30/5 design (baseline)."
    ),
]
PresetOpt = Annotated[
    Preset | None,
    typer.Option(
        help="The guide's recommendations: conservative 30/5, moderate 40/7, "
        "high-volume 50/10, testing 20/3 (batch/concurrency)."
    ),
]
BatchOpt = Annotated[int | None, typer.Option(help="Most rows claimed per claim.")]
ConcOpt = Annotated[int | None, typer.Option(help="Most sends in flight at once.")]
RateOpt = Annotated[
    float | None,
    typer.Option("--rate", help="Messages per second per sender number, all workers together."),
]


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    """A run summary as plain data."""
    s = summary.stats
    p50, p95, p99 = s.lag.quantiles(0.5, 0.95, 0.99)
    call_p50, call_p99 = s.latency.quantiles(0.5, 0.99)
    elapsed = max(1e-9, (summary.ended_at - summary.started_at).total_seconds())
    return {
        "worker_id": summary.worker_id,
        "elapsed_s": round(elapsed, 3),
        "sent": s.sent,
        "failed": s.failed,
        "retries": s.retries,
        "throttled": s.throttled,
        "unknown": s.unknown,
        "fallbacks": s.fallbacks,
        "throughput_per_s": round(s.sent / elapsed, 2),
        "lag_s": {"p50": p50, "p95": p95, "p99": p99, "max": s.lag.maximum},
        # The API calls' own time as this worker saw it (a busy machine adds to it).
        "latency_s": {"p50": call_p50, "p99": call_p99},
        # How busy the slots were over this worker's sending, and why not (stats.py).
        "slots": {
            "busy": _round(s.slots_busy(s.concurrency)),
            "span_s": round(0.0 if s.calls_from is None else s.calls_to - s.calls_from, 3),
            "dry": s.dry,
            "dry_s": round(s.dry_s, 3),
            "join_wait_s": round(s.join_wait_s, 3),
        },
        "failures_by_class": dict(s.failures_by_class),
        "failures_by_code": dict(s.failures_by_code),
        "breaker_tripped": summary.breaker_tripped,
        "breaker_reason": summary.breaker_reason,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def _run_with_metrics(
    settings: Settings, port: int, host: str, once: bool, max_seconds: float | None
) -> RunSummary:
    from dripline.dispatcher.engine import Dispatcher
    from dripline.dispatcher.stats import FanOut
    from dripline.health import BreakerWatch, ReadinessProbe
    from dripline.metrics_export import metrics_exporter
    from dripline.runtime import run_dispatcher
    from dripline.server.worker_http import health_routes
    from dripline.store import open_store

    # The exporter's one connection (backlog gauges) also answers /readyz.
    store = await open_store(settings.database_url, pool_size=1, pooler=settings.db_pooler)
    try:
        breaker = BreakerWatch()
        probe = ReadinessProbe(
            store, settings.ready_max_inbox_lag_s, breaker=breaker, inbox_checked=False
        )
        routes = health_routes(probe, asyncio.get_running_loop())
        async with metrics_exporter(
            settings, port, addr=host, store=store, routes=routes
        ) as exporter:

            def export_senders(dispatcher: Dispatcher) -> None:
                exporter.senders.source = dispatcher.senders_snapshot

            return await run_dispatcher(
                settings,
                once=once,
                max_seconds=max_seconds,
                observer=FanOut(exporter.observer, breaker),
                on_start=export_senders,
            )
    finally:
        await store.close()


def register(app: typer.Typer) -> None:
    @app.command("run")
    @handle_errors
    def run(
        once: Annotated[
            bool,
            typer.Option(
                "--once",
                help="Send what is due now, then exit (for an external cron). Two "
                "overlapping --once runs never send the same message twice.",
            ),
        ] = False,
        max_seconds: Annotated[
            float | None, typer.Option(help="Stop after this many seconds (a time budget).")
        ] = None,
        database_url: DatabaseUrl = None,
        policy: PolicyOpt = None,
        preset: PresetOpt = None,
        batch_limit: BatchOpt = None,
        concurrency: ConcOpt = None,
        rate: RateOpt = None,
        at_least_once: Annotated[
            bool,
            typer.Option(
                "--at-least-once",
                help="Resend messages whose outcome is unknown (after a crash or a read "
                "timeout) instead of waiting for a status webhook. May duplicate.",
            ),
        ] = False,
        flows_dir: Annotated[
            Path | None, typer.Option(help="Directory of flow YAML files.")
        ] = None,
        serve: Annotated[
            bool,
            typer.Option(
                "--serve",
                help="Also serve the API, webhook, dashboard and /metrics in this process "
                "(on --host/--port, see `dripline serve`).",
            ),
        ] = False,
        metrics_port: Annotated[
            int | None,
            typer.Option(
                help="Expose Prometheus metrics on this port (without --serve), with "
                "/healthz and /readyz for health checks."
            ),
        ] = None,
        metrics_host: Annotated[
            str, typer.Option(help="Address for --metrics-port; 0.0.0.0 for remote scrapers.")
        ] = "127.0.0.1",
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the run summary as JSON.")
        ] = False,
    ) -> None:
        """Run the dispatcher: claim due conversations, send at the rate limit, record.

        Long-running by default; stops gracefully on SIGINT/SIGTERM (stops claiming,
        finishes in-flight sends within shutdown_deadline_s, releases unsent claims).
        Exit code 3 when the circuit breaker stopped sending (bad token or account).
        """
        from dripline.runtime import configure_from_settings, run_dispatcher

        settings = settings_from(
            database_url=database_url,
            policy=policy,
            preset=preset,
            batch_limit=batch_limit,
            concurrency=concurrency,
            rate_per_s=rate,
            delivery=Delivery.AT_LEAST_ONCE if at_least_once else None,
            flows_dir=flows_dir,
        )
        configure_from_settings(settings)
        if serve and once:
            raise typer.BadParameter(
                "--serve runs until stopped; it cannot be combined with --once"
            )
        if serve:
            from dripline.server.app import serve_with_dispatcher

            summary = asyncio.run(serve_with_dispatcher(settings, max_seconds=max_seconds))
        elif metrics_port is not None:
            summary = asyncio.run(
                _run_with_metrics(settings, metrics_port, metrics_host, once, max_seconds)
            )
        else:
            summary = asyncio.run(run_dispatcher(settings, once=once, max_seconds=max_seconds))
        data = summary_dict(summary)
        if as_json:
            print_json(data)
        else:
            console = common.console
            console.print(
                f"sent {data['sent']}, failed {data['failed']}, retries {data['retries']}, "
                f"throttled {data['throttled']} in {data['elapsed_s']} s "
                f"({data['throughput_per_s']} msg/s); lag p99 {data['lag_s']['p99']:.3f} s"
            )
            if summary.breaker_tripped:
                console.print(f"[red]sending stopped: {summary.breaker_reason}[/]")
        if summary.exit_code:
            raise typer.Exit(summary.exit_code)
