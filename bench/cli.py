"""`python -m bench [--scenario N ...] [--quick] [--out DIR] [--json] [--no-readme]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from bench import bigtable, chaos_table, latest, report, round2
from bench.context import Bench
from bench.harness import pg_version
from bench.named import NAMED
from bench.scenarios import SCENARIOS, selected

SCENARIOS.update(round2.SCENARIOS)  # issue 14's scenarios live in their own module
SCENARIOS.update(bigtable.SCENARIOS)  # 16: 10,000,000 conversations on PostgreSQL

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results"


class RichProgress:
    """One progress bar per run, on stderr."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, label: str, total: int) -> None:
        self._task = self.bar.add_task(label, total=total, info="")

    def advance(self, done: int, info: str = "") -> None:
        if self._task is not None:
            self.bar.update(self._task, completed=done, info=info)

    def finish(self, info: str = "") -> None:
        if self._task is not None:
            task = self.bar.tasks[self._task]
            self.bar.update(self._task, completed=task.total, info=info or task.fields["info"])
            self._task = None

    def note(self, text: str) -> None:
        self.bar.console.print(f"[dim]{text}[/]")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run dripline's benchmark scenarios against the fake Cloud API.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        help="Scenario number 1-7, 11, 13-16, 20-21 (repeatable; 6 runs inside 1 and 3; "
        "11-16: issue 14's, run only when named; 20, 21: several sender numbers), or a "
        f"named one: {', '.join(NAMED)} (run only when named). Default: 1-7, 20, 21.",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=2_000_000,
        help="soak: messages through the one worker (default 2,000,000; 20,000 is a smoke).",
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        action="append",
        default=[],
        help="soak and chaos-*: the database(s) to run on (repeatable). Default: soak "
        "sqlite; chaos-kill-workers, -pg and -api postgres; chaos-kill-serve, -disk sqlite.",
    )
    parser.add_argument(
        "--dripline-src",
        default=None,
        help="soak: run the worker from this checkout (its src/), e.g. an older commit.",
    )
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: a smoke run.")
    parser.add_argument("--out", type=Path, default=None, help=f"Default: {DEFAULT_OUT}.")
    parser.add_argument("--json", action="store_true", help="Print the JSON report on stdout.")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Keep the databases, logs and SQLite files for inspection (prints where).",
    )
    parser.add_argument(
        "--no-readme",
        action="store_true",
        help="Do not put this run into README.md's table (implied by --quick). Without it, "
        "each numbered scenario that ran replaces its entry there (bench/latest.py).",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    names = [n for n in args.scenario if not n.isdigit()]
    unknown = [n for n in names if n not in NAMED]
    if unknown:
        raise ValueError(f"no scenario {unknown[0]!r} (1-7, {', '.join(NAMED)})")
    numbers = (
        selected([int(n) for n in args.scenario if n.isdigit()])
        if not names or any(n.isdigit() for n in args.scenario)
        else []
    )
    started = time.monotonic()
    load_at_start = round(os.getloadavg()[0], 2)  # a shared machine's numbers need it
    try:
        pg = await pg_version()
    except Exception as exc:
        pg = f"unreachable ({type(exc).__name__})"
    progress = RichProgress(console)
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="dripline-bench-")
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dripline-bench-"))
        bench = Bench(quick=args.quick, workdir=Path(tmp), progress=progress)
        failures: dict[str, str] = {}
        origins: dict[int, str] = {}  # which scenario made each row and check (the README's)
        with progress.bar:
            try:
                for n in numbers:
                    progress.note(f"scenario {n}")
                    made = (len(bench.rows), len(bench.checks))
                    try:
                        await SCENARIOS[n](bench)
                    except Exception as exc:
                        failures[str(n)] = f"{type(exc).__name__}: {exc}"
                        progress.note(f"[red]scenario {n} failed: {exc}[/]")
                    origins.update({id(r): str(n) for r in bench.rows[made[0] :]})
                    origins.update({id(c): str(n) for c in bench.checks[made[1] :]})
                for name in names:
                    progress.note(f"scenario {name}")
                    try:
                        await NAMED[name](bench, args)
                    except Exception as exc:
                        failures[name] = f"{type(exc).__name__}: {exc}"
                        progress.note(f"[red]scenario {name} failed: {exc}[/]")
            finally:
                if args.keep:
                    kept = ", ".join(bench.dbs.created) or "no PostgreSQL databases"
                    progress.note(f"kept {tmp} and {kept}")
                else:
                    await bench.dbs.drop_all()
    now = datetime.now(UTC)
    return {
        "date": now.strftime("%Y-%m-%d"),
        "finished_at": now.isoformat(timespec="seconds"),
        "command": "python -m bench " + shlex.join(sys.argv[1:]),
        "quick": args.quick,
        "scenarios": [*numbers, *names],
        "duration_s": round(time.monotonic() - started, 1),
        "machine": report.machine(pg),
        "load": {"start": load_at_start, "end": round(os.getloadavg()[0], 2)},
        "rows": [{**r.as_dict(), "origin": origins.get(id(r), "")} for r in bench.rows],
        "checks": [{**c.as_dict(), "origin": origins.get(id(c), "")} for c in bench.checks],
        "ratios": bench.extra,
        "errors": failures,
        "_rows": bench.rows,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = Console(stderr=True)
    try:
        doc = asyncio.run(run(args, console))
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    rows = doc.pop("_rows")
    out: Path = args.out or DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    stem = doc["date"] + ("-quick" if args.quick else "")
    names = [n for n in args.scenario if not n.isdigit()]
    if names:
        stem += "-" + "-".join(names)
    md = report.markdown(doc, rows)
    if doc["ratios"].get("chaos"):
        md += "\n## Chaos\n\n" + chaos_table.table(doc["ratios"]["chaos"])
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(md)
    readme = [] if args.quick or args.no_readme else latest.record(doc)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        console.print(md)
        console.print(
            f"wrote {out / stem}.json and .md"
            + (f"; README.md's table now has this run's {', '.join(readme)}" if readme else "")
        )
    missed = [c for c in doc["checks"] if not c["met"]]
    if missed:
        console.print(f"{len(missed)} target(s) missed")
    return 1 if doc["errors"] else 0
