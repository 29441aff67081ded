"""`dripline demo`: the main job on the embedded default against a local Cloud API."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from dripline.cli.common import console, err_console, handle_errors, print_json, settings_from
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
        answers: Annotated[
            int,
            typer.Option(
                min=0,
                max=10_000,
                help="Simulated users through the free-trial flow, answering by webhook "
                "(time compressed); 0 skips the answers phase.",
            ),
        ] = 300,
        database_url: DatabaseUrl = None,
        policy: PolicyOpt = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the summary and the results as JSON.")
        ] = False,
        no_live: Annotated[
            bool, typer.Option("--no-live", help="No live progress display (for logs/CI).")
        ] = False,
    ) -> None:
        """Run dripline on the embedded SQLite database against a local Cloud API.

        First, simulated users go through the shipped flows/free-trial.yaml: they tap
        buttons and list rows, type answers (some invalid, re-asked) or never answer,
        each reply a signed webhook to dripline's /webhook. The flow waits a day between
        questions, so this phase runs on a compressed clock (days in well under a
        minute). Then the throughput run: a backlog due now plus a stream due over the
        following minute, sent at the rate limit with a live display, and a summary
        measured at the local Cloud API: throughput against the limit, lag, duplicates,
        errors, and what the seed's 5-minute/30/5 design would have taken for the same
        load. Last, the free-trial flow's results table, as `dripline results
        free-trial` shows it. With the defaults it takes three to four minutes.
        Recreates ./dripline.db when it holds only earlier demo data.
        """
        from dripline.demo import DemoOptions, run_demo
        from dripline.demo_report import render_answers, render_report
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
            answers=answers,
        )
        # With --json, stdout holds the one JSON document: progress goes to stderr.
        report = asyncio.run(run_demo(settings, opts, err_console if as_json else console))
        if as_json:
            print_json(report.as_dict())
        else:
            render_report(report, console)
            if report.answers is not None:
                render_answers(report.answers, console, report.database)
            elif report.answers_skipped:
                console.print(f"no answers phase: {report.answers_skipped}")
        if report.duplicates or report.missing:
            raise typer.Exit(1)
