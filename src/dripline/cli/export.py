"""`dripline export --flow F answers.csv`: one row per conversation, a typed column per
question (the option id, the number or the text); `--json` for a JSON array."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from dripline.cli.common import err_console, handle_errors, settings_from
from dripline.errors import ConfigError

if TYPE_CHECKING:
    from dripline.store import Inbound

# Leading characters a spreadsheet would run as a formula: answers come from strangers.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
BASE_COLUMNS = ("conversation_id", "phone", "name", "state", "step", "created_at", "updated_at")


def _cell(text: str | None) -> str:
    if not text:
        return ""
    return "'" + text if text.startswith(_FORMULA) else text


def _typed(value: str | float | None) -> str | float | int | None:
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    return value


def _csv_value(value: str | float | None) -> str:
    if value is None or isinstance(value, str):
        return _cell(value)
    return str(_typed(value))


async def write_answers(
    database_url: str,
    flow_name: str,
    flows_dir: Path,
    out: TextIO,
    *,
    pooler: bool = False,
    as_json: bool = False,
) -> int:
    """Stream the answers of `flow_name` to `out` as CSV (or a JSON array); returns the
    rows written. `pooler`: settings.db_pooler (a transaction-mode pooler in front of
    PostgreSQL).

    Each question's column is its typed answer: the option id, the number, or the text
    (`store.results_types.answer_of`: the first valid reply; invalid ones are skipped).
    Reads one keyset page at a time, so memory stays flat whatever the row count.
    """
    from dripline.flows import load_flows
    from dripline.store import open_store
    from dripline.store.results_types import answer_of, answer_value

    questions = load_flows(flows_dir).get(flow_name).questions()
    store = await open_store(database_url, pool_size=1, pooler=pooler, auto_migrate=False)
    writer = csv.writer(out)
    if as_json:
        out.write("[")
    else:
        writer.writerow([*BASE_COLUMNS, *(q.id for q in questions)])
    count = 0
    try:
        async for page in store.answer_pages(flow_name):
            rows: list[list[Any]] = []
            for conv, replies in page:
                by_step: dict[int, list[Inbound]] = {}
                for reply in replies:
                    if reply.step is not None:
                        by_step.setdefault(reply.step, []).append(reply)
                answers: list[str | float | None] = []
                for q in questions:
                    answer = answer_of(by_step.get(q.index, []))
                    answers.append(None if answer is None else answer_value(answer))
                base = [
                    conv.id,
                    conv.phone,
                    conv.name,
                    conv.state,
                    conv.step,
                    conv.created_at.isoformat(),
                    conv.updated_at.isoformat(),
                ]
                if as_json:
                    record = dict(zip(BASE_COLUMNS, base, strict=True))
                    record["answers"] = {
                        q.id: _typed(a) for q, a in zip(questions, answers, strict=True)
                    }
                    out.write(("," if count else "") + "\n" + json.dumps(record))
                    count += 1
                else:
                    base[2] = _cell(conv.name)
                    rows.append([*base, *(_csv_value(a) for a in answers)])
            writer.writerows(rows)
            count += len(rows)
    finally:
        await store.close()
    if as_json:
        out.write("\n]\n")
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
        as_json: Annotated[
            bool, typer.Option("--json", help="Write a JSON array instead of CSV.")
        ] = False,
    ) -> None:
        """Write one row per conversation of FLOW with a column per question: its typed
        answer (the option id, the number or the text). Streamed: a million rows need no
        more memory than a thousand."""
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
                    as_json=as_json,
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
                        as_json=as_json,
                    )
                )
            err_console.print(f"wrote {count} conversations to {output}", highlight=False)
