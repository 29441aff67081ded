"""`dripline results FLOW`: a flow's results per question, from the database.

The funnel (sent -> delivered -> read -> answered), response and invalid-answer rates,
the median time to answer, counts per option and the NPS of a 0-10 question, as a
table (`dripline.results_report`) or `--json` (the document `GET
/v1/flows/{name}/results` answers). Nothing is written.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dripline.cli.common import handle_errors, print_json, settings_from
from dripline.errors import ConfigError

if TYPE_CHECKING:
    from dripline.results import FlowResults

__all__ = ["register"]


async def _load(database_url: str, flow_name: str, flows_dir: Path, pooler: bool) -> FlowResults:
    from dripline.flows import load_flows
    from dripline.results import flow_results
    from dripline.store import open_store

    flow = load_flows(flows_dir).get(flow_name)  # FlowError (exit 2) before any I/O
    store = await open_store(database_url, pool_size=1, pooler=pooler, auto_migrate=False)
    try:
        return await flow_results(store, flow)
    finally:
        await store.close()


def register(app: typer.Typer) -> None:
    @app.command("results")
    @handle_errors
    def results(
        flow: Annotated[str, typer.Argument(help="The flow whose results to show.")],
        database_url: Annotated[
            str | None,
            typer.Option("--database-url", help="sqlite:///file.db or postgresql://user@host/db."),
        ] = None,
        flows_dir: Annotated[
            Path | None, typer.Option(help="Directory of flow YAML files.")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    ) -> None:
        """Per question of FLOW: funnel, response rate, median time to answer,
        invalid answers, counts per option, numbers and NPS."""
        from dripline.results import to_json
        from dripline.results_report import render
        from dripline.store.urls import parse_database_url

        settings = settings_from(database_url=database_url, flows_dir=flows_dir)
        path = parse_database_url(settings.database_url).sqlite_path
        if path is not None and not Path(path).exists():
            # Opening it would create an empty database and show nothing, silently.
            raise ConfigError(f"no database at {path}")
        found = asyncio.run(
            _load(settings.database_url, flow, settings.flows_dir, settings.db_pooler)
        )
        if as_json:
            print_json(to_json(found))
        else:
            sys.stdout.write(render(found))
