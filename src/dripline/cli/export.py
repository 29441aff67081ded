"""`dripline export --flow F answers.csv`: one row per conversation, a column per question."""

from __future__ import annotations

import asyncio
import csv
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from dripline.cli.common import err_console, handle_errors, settings_from
from dripline.errors import ConfigError

# Leading characters a spreadsheet would run as a formula: answers come from strangers.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
BASE_COLUMNS = ("conversation_id", "phone", "name", "state", "step", "created_at", "updated_at")


def _cell(text: str | None) -> str:
    if not text:
        return ""
    return "'" + text if text.startswith(_FORMULA) else text


async def write_answers(
    database_url: str, flow_name: str, flows_dir: Path, out: TextIO, *, pooler: bool = False
) -> int:
    """Stream the answers of `flow_name` to `out` as CSV; returns the rows written.
    `pooler`: settings.db_pooler (a transaction-mode pooler in front of PostgreSQL).

    Reads one keyset page at a time, so memory stays flat whatever the row count.
    """
    from dripline.flows import load_flows
    from dripline.store import open_store

    questions = load_flows(flows_dir).get(flow_name).questions()
    store = await open_store(database_url, pool_size=1, pooler=pooler, auto_migrate=False)
    writer = csv.writer(out)
    writer.writerow([*BASE_COLUMNS, *(q.id for q in questions)])
    count = 0
    try:
        async for page in store.answer_pages(flow_name):
            rows: list[list[Any]] = []
            for conv, answers in page:
                first: dict[int, str | None] = {}
                for answer in answers:
                    if answer.step is not None:
                        first.setdefault(answer.step, answer.body)
                rows.append(
                    [
                        conv.id,
                        conv.phone,
                        _cell(conv.name),
                        conv.state,
                        conv.step,
                        conv.created_at.isoformat(),
                        conv.updated_at.isoformat(),
                        *(_cell(first.get(q.index)) for q in questions),
                    ]
                )
            writer.writerows(rows)
            count += len(rows)
    finally:
        await store.close()
    return count


def register(app: typer.Typer) -> None:
    @app.command("export")
    @handle_errors
    def export(
        output: Annotated[str, typer.Argument(help="CSV file to write, or - for stdout.")],
        flow: Annotated[str, typer.Option("--flow", help="The flow whose answers to export.")],
        database_url: Annotated[
            str | None,
            typer.Option("--database-url", help="sqlite:///file.db or postgresql://user@host/db."),
        ] = None,
        flows_dir: Annotated[
            Path | None, typer.Option(help="Directory of flow YAML files.")
        ] = None,
    ) -> None:
        """Write one row per conversation of FLOW with a column per question (its first
        answer), streamed: a million rows need no more memory than a thousand."""
        from dripline.store.urls import parse_database_url

        settings = settings_from(database_url=database_url, flows_dir=flows_dir)
        path = parse_database_url(settings.database_url).sqlite_path
        if path is not None and not Path(path).exists():
            # Opening it would create an empty database and export nothing, silently.
            raise ConfigError(f"no database at {path}")
        if output == "-":
            count = asyncio.run(
                write_answers(
                    settings.database_url,
                    flow,
                    settings.flows_dir,
                    sys.stdout,
                    pooler=settings.db_pooler,
                )
            )
        else:
            with open(output, "w", newline="", encoding="utf-8") as handle:
                count = asyncio.run(
                    write_answers(
                        settings.database_url,
                        flow,
                        settings.flows_dir,
                        handle,
                        pooler=settings.db_pooler,
                    )
                )
            err_console.print(f"wrote {count} conversations to {output}", highlight=False)
