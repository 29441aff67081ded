"""`dripline enroll` and `dripline import`: put people into a flow.

Everything is validated before anything is written: one bad row fails the whole import
(exit 2, nothing written) unless `--skip-invalid`, which reports every skipped line.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from dripline.cli.common import console, err_console, handle_errors, print_json, settings_from
from dripline.errors import FlowError, InputError, SuppressedError
from dripline.flows import Flow, load_flows
from dripline.flows.enrollment import check_template_values
from dripline.phones import normalize_phone
from dripline.senders import flow_sender, resolve_sender
from dripline.settings import Settings
from dripline.store import Enrollment, EnrollResult, open_store
from dripline.text import unstorable_reason

__all__ = ["ParsedCsv", "parse_at", "parse_csv", "parse_timezone"]

KNOWN_COLUMNS = ("phone", "name", "timezone", "at", "sender")

DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///file.db or postgresql://user@host/db (default: settings).",
    ),
]
FlowOpt = Annotated[str, typer.Option("--flow", help="The flow to enroll into (its name).")]
AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="When the first message is due, ISO 8601 (2026-03-01T09:00:00+01:00). "
        "Without an offset it is UTC. Default: now.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
OptInOpt = Annotated[
    bool,
    typer.Option(
        "--opt-in",
        help="The person opted in again: lift an earlier opt-out (STOP, 131050) of the "
        "number instead of refusing it.",
    ),
]


def parse_at(raw: str, *, where: str) -> datetime:
    """An ISO 8601 timestamp as aware UTC; naive means UTC."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InputError(
            f"at {raw!r} is not an ISO 8601 time (e.g. 2026-03-01T09:00:00Z)", where=where
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_timezone(raw: str, *, where: str) -> str:
    """An IANA time zone name (Europe/Paris), checked with zoneinfo."""
    name = raw.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"timezone {raw!r} is not an IANA time zone (e.g. Europe/Paris)", where=where
        ) from None
    return name


@dataclass(frozen=True, slots=True)
class ParsedCsv:
    items: list[Enrollment]
    lines: list[int]  # the file line of each item
    skipped: list[tuple[int, str]]  # (line, why) with --skip-invalid


def _row(row: dict[str, str], flow: str, where: str, extra: Sequence[str]) -> Enrollment:
    phone = normalize_phone(row.get("phone", ""), where=where)
    name = (row.get("name") or "").strip() or None
    tz_raw = (row.get("timezone") or "").strip()
    at_raw = (row.get("at") or "").strip()
    fields = {k: v for k in extra if (v := (row.get(k) or "").strip())}
    return Enrollment(
        phone=phone,
        flow=flow,
        at=parse_at(at_raw, where=where) if at_raw else None,
        name=name,
        timezone=parse_timezone(tz_raw, where=where) if tz_raw else None,
        sender=(row.get("sender") or "").strip() or None,  # checked by `check`
        fields=fields,
    )


def parse_csv(
    path: Path,
    flow: str,
    *,
    skip_invalid: bool = False,
    on_row: Callable[[int], None] | None = None,
    check: Callable[[Enrollment, str], Enrollment] | None = None,
) -> ParsedCsv:
    """Read and validate a whole CSV file (header row; `phone` required).

    Raises InputError naming file, line and field at the first bad row, unless
    `skip_invalid`, which collects them instead.
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", where=str(path)) from None
    items: list[Enrollment] = []
    lines: list[int] = []
    skipped: list[tuple[int, str]] = []
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise InputError("the file is empty; expected a header row", where=f"{path}:1")
            columns = [h.strip().lower() for h in header]
            if "phone" not in columns:
                raise InputError(
                    f"no `phone` column in the header ({', '.join(columns)})", where=f"{path}:1"
                )
            if len(set(columns)) != len(columns):
                raise InputError("duplicate column names in the header", where=f"{path}:1")
            extra = [c for c in columns if c and c not in KNOWN_COLUMNS]
            start = reader.line_num + 1
            for values in reader:
                line, start = start, reader.line_num + 1
                if not any(v.strip() for v in values):
                    continue
                where = f"{path}:{line}"
                try:
                    if len(values) > len(columns):
                        raise InputError(
                            f"{len(values)} values for {len(columns)} columns", where=where
                        )
                    row = dict(zip(columns, values, strict=False))
                    item = _row(row, flow, where, extra)
                    if check is not None:
                        # The flow's own rules (template values) and the sender number.
                        item = check(item, where)
                    items.append(item)
                    lines.append(line)
                except InputError as exc:
                    if not skip_invalid:
                        raise
                    skipped.append((line, str(exc)))
                if on_row is not None:
                    on_row(1)
        except UnicodeDecodeError:
            raise InputError("is not UTF-8 text", where=f"{path}:{reader.line_num + 1}") from None
        except csv.Error as exc:
            raise InputError(f"malformed CSV: {exc}", where=f"{path}:{reader.line_num}") from None
    return ParsedCsv(items, lines, skipped)


SenderOpt = Annotated[
    str | None,
    typer.Option(
        "--sender",
        help="The business phone number id to send from (a configured one, see "
        "`senders`); a CSV `sender` column wins. Default: the flow's, else the default "
        "number.",
    ),
]


def _check_flow(flow: str, settings: Settings) -> Flow:
    """Refuse a flow that is neither built in nor in the flows directory."""
    if not flow.strip():
        raise InputError("flow name is empty", where="--flow")
    try:
        return load_flows(settings.flows_dir).get(flow)
    except FlowError as exc:
        raise FlowError(str(exc), where="--flow") from None


def _row_check(
    flow: Flow, settings: Settings, sender: str | None
) -> Callable[[Enrollment, str], Enrollment]:
    """A CSV row's check: a value landing in a template text parameter must pass
    Meta's rule (no line breaks, tabs, > 4 spaces), else the row names the column; the
    row's `sender` (else --sender, else the flow's) must be a configured number."""
    ids = settings.sender_ids

    def check(item: Enrollment, where: str) -> Enrollment:
        check_template_values(flow, item.fields, item.name, where=f"{where} ")
        chosen = resolve_sender(
            item.sender or sender, flow_sender(flow), ids[0], ids, where=f"{where} sender"
        )
        return dataclasses.replace(item, sender=chosen)

    return check


async def _enroll(
    settings: Settings, items: Sequence[Enrollment], where: Callable[[int], str]
) -> list[EnrollResult]:
    """Enroll `items`; a suppressed number's error names `where(index)` (its option or
    file line)."""
    store = await open_store(settings.database_url, pool_size=1, pooler=settings.db_pooler)
    try:
        return await store.enroll(items, datetime.now(UTC))
    except SuppressedError as exc:
        raise exc.at(where(exc.index)) from None
    finally:
        await store.close()


def register(app: typer.Typer) -> None:
    @app.command("enroll")
    @handle_errors
    def enroll(
        flow: FlowOpt,
        phone: Annotated[str, typer.Option("--phone", help="The number in E.164 (+16505551234).")],
        at: AtOpt = None,
        name: Annotated[
            str | None, typer.Option("--name", help="The person's name, for templates.")
        ] = None,
        timezone: Annotated[
            str | None,
            typer.Option("--timezone", help="IANA time zone (Europe/Paris) for quiet hours."),
        ] = None,
        opt_in: OptInOpt = False,
        sender: SenderOpt = None,
        database_url: DatabaseUrlOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Start one conversation: PHONE enters FLOW, first message due at --at (or now).

        Enrolling a number already active in the flow changes nothing (it says so). A
        number that opted out (STOP) is refused unless --opt-in."""
        settings = settings_from(database_url=database_url)
        flow_def = _check_flow(flow, settings)
        if name and (reason := unstorable_reason(name)):  # argv bytes that are not UTF-8
            raise InputError(reason, where="--name")
        check_template_values(flow_def, {}, name, where="--")
        item = Enrollment(
            phone=normalize_phone(phone, where="--phone"),
            flow=flow,
            at=parse_at(at, where="--at") if at else None,
            name=name.strip() or None if name else None,
            timezone=parse_timezone(timezone, where="--timezone") if timezone else None,
            sender=resolve_sender(
                sender,
                flow_sender(flow_def),
                settings.sender_ids[0],
                settings.sender_ids,
                where="--sender",
            ),
            opt_in=opt_in,
        )
        [result] = asyncio.run(_enroll(settings, [item], lambda _i: "--phone"))
        if as_json:
            print_json(
                {
                    "id": result.id,
                    "created": result.created,
                    "phone": item.phone,
                    "flow": flow,
                    "at": item.at.isoformat() if item.at else None,
                }
            )
        elif result.created:
            due = item.at.isoformat() if item.at else "now"
            console.print(
                f"enrolled {item.phone} in {flow} (conversation {result.id}, due {due})",
                highlight=False,
            )
        else:
            console.print(
                f"{item.phone} is already active in {flow} (conversation {result.id})",
                highlight=False,
            )

    @app.command("import")
    @handle_errors
    def import_csv(
        flow: FlowOpt,
        file: Annotated[
            Path | None,
            typer.Argument(
                help="CSV with a header row: phone (required), name, timezone, at "
                "(ISO 8601, no offset = UTC), sender (a configured phone number id); "
                "other columns become template fields. "
                "Not with --from-postgres."
            ),
        ] = None,
        skip_invalid: Annotated[
            bool,
            typer.Option(
                "--skip-invalid",
                help="Import the valid rows and list the skipped lines, instead of "
                "refusing the whole file.",
            ),
        ] = False,
        opt_in: Annotated[
            bool,
            typer.Option(
                "--opt-in",
                help="Everyone in the file opted in again: lift earlier opt-outs (STOP, "
                "131050) of these numbers instead of refusing the file.",
            ),
        ] = False,
        sender: SenderOpt = None,
        database_url: DatabaseUrlOpt = None,
        as_json: JsonOpt = False,
        from_postgres: Annotated[
            str | None,
            typer.Option(
                "--from-postgres",
                help="Instead of a CSV: move in from another scheduler's table in this "
                "PostgreSQL database (read-only), each row at its own step of FLOW. "
                "See docs/migrating.md.",
            ),
        ] = None,
        query: Annotated[
            str | None,
            typer.Option(
                "--query",
                help="With --from-postgres: the SQL whose columns are phone, step, "
                "next_send_at, and optionally state, asked_at, name, timezone, key.",
            ),
        ] = None,
        query_file: Annotated[
            Path | None, typer.Option("--query-file", help="The same SQL, from a file.")
        ] = None,
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run",
                help="With --from-postgres: show what would be imported; write nothing.",
            ),
        ] = False,
    ) -> None:
        """Enroll a CSV file into FLOW, or move in another scheduler's table (--from-postgres).

        A CSV file is enrolled all or nothing; --from-postgres places each row of the
        query at its own step of FLOW (docs/migrating.md).

        Every row is checked first; one bad row (phone, timezone, at) stops the import
        with its file, line and field, and nothing is written. Numbers already active in
        the flow are left as they are and counted as existing (from a table: numbers
        dripline has in the flow in any state, so re-running never duplicates). A number
        that opted out (STOP) refuses the whole file, naming its line, unless --opt-in."""
        settings = settings_from(database_url=database_url)
        flow_def = _check_flow(flow, settings)
        if from_postgres is not None:
            from dripline.cli.import_pg import load_query, run_table_import

            if file is not None:
                raise InputError("give a CSV file or --from-postgres, not both", where=str(file))
            run_table_import(
                settings,
                url=from_postgres,
                query=load_query(query, query_file),
                flow_name=flow,
                dry_run=dry_run,
                skip_invalid=skip_invalid,
                as_json=as_json,
            )
            return
        if file is None:
            raise InputError("give a CSV file to import (or --from-postgres)", where="FILE")
        if query is not None or query_file is not None or dry_run:
            raise InputError("--query, --query-file and --dry-run go with --from-postgres")
        show = not as_json and err_console.is_terminal
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console,
            transient=True,
            disable=not show,
        )
        with progress:
            task = progress.add_task(f"checking {file.name}", total=None)
            parsed = parse_csv(
                file,
                flow,
                skip_invalid=skip_invalid,
                on_row=lambda n: progress.advance(task, n),
                check=_row_check(flow_def, settings, sender),
            )
            results: list[EnrollResult] = []
            if parsed.items:
                # One transaction (all or nothing), so no partial progress to show.
                progress.update(task, description=f"writing {len(parsed.items)} rows", total=None)
                items = (
                    [dataclasses.replace(i, opt_in=True) for i in parsed.items]
                    if opt_in
                    else parsed.items
                )
                results = asyncio.run(
                    _enroll(settings, items, lambda i: f"{file}:{parsed.lines[i]}")
                )
        created = sum(r.created for r in results)
        report: dict[str, Any] = {
            "file": str(file),
            "flow": flow,
            "rows": len(parsed.items) + len(parsed.skipped),
            "created": created,
            "existing": len(results) - created,
            "skipped": [{"line": line, "error": why} for line, why in parsed.skipped],
        }
        if as_json:
            print_json(report)
            return
        for _line, why in parsed.skipped:
            err_console.print(f"skipped {why}", highlight=False, soft_wrap=True)
        console.print(
            f"{file}: {created} enrolled in {flow}, {report['existing']} already active, "
            f"{len(parsed.skipped)} skipped",
            highlight=False,
        )
