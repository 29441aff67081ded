"""`dripline demo`: the main job on the embedded default against a local Cloud API."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from dripline.cli.common import console, handle_errors, print_json, settings_from
from dripline.cli.run import DatabaseUrl, PolicyOpt


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @handle_errors
    def demo(
        conversations: Annotated[
            int, typer.Option(min=0, help="Conversations due now (the backlog).")
        ] = 10_000,
        stream: Annotated[
            int, typer.Option(min=0, help="Conversations falling due after the backlog.")
        ] = 1_200,
        stream_window: Annotated[
            float, typer.Option(min=1, help="Seconds over which the stream falls due.")
        ] = 60.0,
        rate: Annotated[
            float,
            typer.Option(
                min=0.1, help="The Cloud API limit in msg/s: 80 by default, 1000 upgraded."
            ),
        ] = 80.0,
        latency_ms: Annotated[
            float, typer.Option(min=0, help="Mean API latency of the local Cloud API.")
        ] = 150.0,
        database_url: DatabaseUrl = None,
        policy: PolicyOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
        no_live: Annotated[
            bool, typer.Option("--no-live", help="No live progress display (for logs/CI).")
        ] = False,
    ) -> None:
        """Run dripline on the embedded SQLite database against a local Cloud API.

        Enrolls a backlog due now plus a stream due over the following minute, sends it
        all at the rate limit with a live display, and ends with a summary measured at
        the local Cloud API: throughput against the limit, lag, duplicates, errors, and
        what the seed's 5-minute/30/5 design would have taken for the same load. With
        the defaults it takes about three minutes. Recreates ./dripline.db when it
        holds only earlier demo data.
        """
        from dripline.demo import DemoOptions, render_report, run_demo
        from dripline.runtime import configure_from_settings

        settings = settings_from(database_url=database_url, policy=policy, log_level="WARNING")
        configure_from_settings(settings)
        opts = DemoOptions(
            conversations=conversations,
            stream=stream,
            stream_window_s=stream_window,
            rate_per_s=rate,
            latency_ms=latency_ms,
            latency_p99_ms=latency_ms * 3,
            live=not no_live and not as_json,
        )
        report = asyncio.run(run_demo(settings, opts, console))
        if as_json:
            print_json(report.as_dict())
        else:
            render_report(report, console)
        if report.duplicates or report.missing:
            raise typer.Exit(1)
