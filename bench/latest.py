"""The README's benchmark table: the latest run of each scenario, whichever run made it.

A full `python -m bench` takes 15 minutes and runs scenarios 1-7, 20 and 21; issue 14's
scenarios (11, 13-16) run only when named, some for hours (15 and 16 at full size). So
the README cannot be one run's report. Each run that measures a numbered scenario for
real (not `--quick`, not `--no-readme`, the scenario did not fail) replaces that
scenario's entry in `bench/results/latest.json`, and the README section is rendered from
every entry, each under the run (command, date, load average) that produced it.

An entry is one scenario's rows and targets on the backends it ran: a run of scenario 15
on SQLite alone replaces the SQLite drain and leaves the PostgreSQL one. A run saved
with `--no-readme` can be added later: `python -m bench.latest add FILE.json`
(`--label` keeps a variant beside the plain entry, e.g. autovacuum off).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench import report
from bench.measure import Row

ROOT = Path(__file__).resolve().parent.parent
LATEST = ROOT / "bench" / "results" / "latest.json"
README = ROOT / "README.md"

_RUN_KEYS = ("date", "finished_at", "command", "duration_s", "machine", "load")
_ROW_FIELDS = {f.name for f in dataclasses.fields(Row)}
_SCENARIO_REF = re.compile(r"\(scenario (\d+)")


def row_origin(scenario: str, default: str) -> str:
    """The scenario whose run made a row: "6 (1)" is scenario 6's comparison inside 1."""
    inner = re.search(r"\((\d+)\)", scenario)
    if inner:
        return inner.group(1)
    head = scenario.split()[0] if scenario.split() else ""
    return head if head.isdigit() else default


def check_origin(check: Mapping[str, Any], default: str) -> str:
    """Scenario 6's and the planner's targets name the scenario they compare against."""
    scenario = str(check["scenario"])
    if scenario.isdigit() and scenario != "6":
        return scenario
    ref = _SCENARIO_REF.search(str(check["target"]))
    return ref.group(1) if ref else default


def _origin(item: Mapping[str, Any], default: str, *, is_row: bool) -> str:
    if item.get("origin"):
        return str(item["origin"])
    if is_row:
        return row_origin(str(item["scenario"]), default)
    return check_origin(item, default)


def _backends(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted({str(r["backend"]) for r in rows if r.get("backend") in ("sqlite", "postgres")})


def entries(doc: Mapping[str, Any], *, label: str = "") -> dict[str, dict[str, Any]]:
    """Split one run's report into an entry per numbered scenario it ran."""
    numbers = [str(s) for s in doc.get("scenarios") or [] if str(s).isdigit()]
    if not numbers:
        return {}
    failed = {str(k) for k in (doc.get("errors") or {})}
    out: dict[str, dict[str, Any]] = {}
    for n in numbers:
        if n in failed:
            continue
        rows = [r for r in doc["rows"] if _origin(r, numbers[0], is_row=True) == n]
        checks = [c for c in doc["checks"] if _origin(c, numbers[0], is_row=False) == n]
        if not rows and not checks:
            continue
        backends = _backends(rows)
        key = n + (f" {'+'.join(backends)}" if backends else "") + (f" [{label}]" if label else "")
        out[key] = {
            "scenario": n,
            "backends": backends,
            "label": label,
            "run": {k: doc.get(k) for k in _RUN_KEYS},
            "rows": rows,
            "checks": checks,
        }
    return out


def merge(store: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The store with `new`'s entries in; an entry replaces those it covers.

    Covers: same scenario and label, and its backends include the stored one's (a run on
    both backends replaces each backend's own run; a run on one leaves the other).
    """
    out = dict(store)
    for key, entry in new.items():
        for old_key, old in list(out.items()):
            if (
                old["scenario"] == entry["scenario"]
                and old.get("label", "") == entry.get("label", "")
                and set(old["backends"]) <= set(entry["backends"])
            ):
                del out[old_key]
        out[key] = entry
    return out


def _row(data: Mapping[str, Any]) -> Row:
    return Row(**{k: v for k, v in data.items() if k in _ROW_FIELDS})


def _order(key: str) -> tuple[int, str]:
    number = key.split()[0]
    return (int(number) if number.isdigit() else 10_000, key)


def render(store: Mapping[str, Any]) -> str:
    """The README section: each run's header, then its scenarios' rows and targets."""
    groups: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for key in sorted(store, key=_order):
        entry = store[key]
        for run, members in groups:
            if run == entry["run"]:
                members.append(entry)
                break
        else:
            groups.append((entry["run"], [entry]))
    out = [
        "`make bench` (or `python -m bench`) runs issue 7's scenarios (1-7) and the "
        "several-numbers ones (20, 21) against the fake Cloud API over loopback; issue "
        "14's (11, 13-16) run when named. Each block below is the latest run of its "
        "scenarios (`bench/results/latest.json`; `bench/README.md` says what each "
        "measures and what limits it).",
        "",
    ]
    for run, members in groups:
        scenarios = ", ".join(dict.fromkeys(m["scenario"] for m in members))
        labels = ", ".join(sorted({m["label"] for m in members if m.get("label")}))
        out += report.run_header(
            run,
            title=f"Scenario{'s' if ',' in scenarios else ''} {scenarios}"
            + (f" ({labels})" if labels else ""),
        )
        rows = [_row(r) for m in members for r in m["rows"]]
        out.append(report.table(rows))
        checks = [c for m in members for c in m["checks"]]
        if checks:
            out += ["Targets:", "", *report.target_lines(checks), ""]
        out += report.plan_lines(rows)
    out += report.legend()
    return "\n".join(out) + "\n"


def load(path: Path = LATEST) -> dict[str, Any]:
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def record(
    doc: Mapping[str, Any], *, label: str = "", path: Path = LATEST, readme: Path = README
) -> list[str]:
    """Put a run's scenarios into the store and the README; returns the keys written."""
    new = entries(doc, label=label)
    if not new:
        return []
    merged = merge(load(path), new)
    store = {key: merged[key] for key in sorted(merged, key=_order)}  # a stable diff
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(store, indent=1, default=str) + "\n")
    report.update_readme(readme, render(store))
    return sorted(new, key=_order)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latest",
        description="Add saved benchmark reports (bench/results/*.json) to the README's "
        "table of the latest run of each scenario, or re-render it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="Add the scenarios of saved reports (in the given order).")
    add.add_argument("files", nargs="+", type=Path)
    add.add_argument("--label", default="", help="Keep these beside the plain entries.")
    sub.add_parser("render", help="Re-render README.md's section from latest.json.")
    args = parser.parse_args(argv)
    if args.command == "render":
        report.update_readme(README, render(load()))
        return 0
    for file in args.files:
        try:
            doc = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: {file}: {exc}", file=sys.stderr)
            return 2
        keys = record(doc, label=args.label)
        print(f"{file}: " + (", ".join(keys) if keys else "no numbered scenario to add"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
