"""The machine, the JSON document, the markdown table and the README section."""

from __future__ import annotations

import os
import platform
import re
import sqlite3
from pathlib import Path
from typing import Any

from bench.measure import Row

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"


def machine(pg_version: str | None) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1_048_576, 1)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "sqlite": sqlite3.sqlite_version,
    }


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 10_000:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _lag(r: Row) -> str:
    vals = (r.lag_p50_ms, r.lag_p95_ms, r.lag_p99_ms, r.lag_max_ms)
    if all(v is None for v in vals):
        return "–"

    def one(v: float | None) -> str:
        if v is None:
            return "–"
        if v >= 100_000:
            return f"{v / 1000:,.0f} s"
        return f"{v:,.0f}"

    return " / ".join(one(v) for v in vals)


def table(rows: list[Row]) -> str:
    head = (
        "| # | run | system | db | msgs | time s | msg/s | / bound | lag p50/p95/p99/max ms "
        "| 130429 | dup | miss | CPU ms/msg (net) | PG CPU ms/msg | RSS MB | DB conns |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        system = r.system + ("" if r.measured else " (simulated)")
        cpu = "–" if r.cpu_ms_per_msg is None else _f(r.cpu_ms_per_msg, 3)
        if r.cpu_ms_per_msg_net is not None:
            cpu += f" ({_f(r.cpu_ms_per_msg_net, 3)})"
        lines.append(
            f"| {r.scenario} | {r.run} | {system} | {r.backend} | {_f(r.messages)} "
            f"| {_f(r.wall_s)} | {_f(r.throughput_per_s)} | {_f(r.ratio_to_bound, 3)} "
            f"| {_lag(r)} | {_f(r.throttled_130429)} | {_f(r.duplicates)} | {_f(r.missing)} "
            f"| {cpu} | {_f(r.pg_cpu_ms_per_msg, 3)} | {_f(r.peak_rss_mb)} "
            f"| {_f(r.db_connections)} |"
        )
    return head + "\n".join(lines) + "\n"


def run_header(run: dict[str, Any], *, title: str = "Run") -> list[str]:
    """Which command made these numbers, when, on what machine and under what load."""
    m = run.get("machine") or {}
    load = run.get("load") or {}
    busy = ""
    if load:
        busy = (
            f" Load average {load.get('start', 0):.1f} at the start, "
            f"{load.get('end', 0):.1f} at the end."
        )
    return [
        f"{title}: {run['date']} with `{run['command']}`"
        + (" (**quick**: tiny sizes, not comparable)" if run.get("quick") else "")
        + f", {run['duration_s']:.0f} s in all.{busy}",
        "",
        f"Machine: {m.get('cores')} cores, {m.get('cpu_model')}, {m.get('memory_gib')} GiB; "
        f"Python {m.get('python')}, PostgreSQL {m.get('postgresql')}, SQLite {m.get('sqlite')}. "
        "The fake Cloud API, the dispatcher and PostgreSQL share these cores.",
        "",
    ]


def target_lines(checks: list[dict[str, Any]]) -> list[str]:
    return [
        f"- {c['scenario']}: {c['target']}: {c['value']} ({'met' if c['met'] else '**missed**'})"
        for c in checks
    ]


def plan_lines(rows: list[Row]) -> list[str]:
    """Scenario 5's claim plans, printed under its rows."""
    scale = [r for r in rows if r.scenario == "5" and r.extra.get("plan")]
    if not scale:
        return []
    out = ["Scenario 5, the claim's due query plan:", ""]
    for r in scale:
        out += [f"{r.backend}:", "", "```", *[str(line) for line in r.extra["plan"]], "```", ""]
    return out


def legend() -> list[str]:
    return [
        "Columns: time = first to last send at the fake (for webhooks: the load's "
        "duration); msg/s = messages / time; bound = min(rate limit, concurrency / mean "
        "latency); lag = arrival at the fake (before its simulated latency) minus the due "
        "time (scenario 7: POST acknowledgement time); CPU = the process's user+system "
        "time from the kernel per message, startup included, with the idle start/stop "
        "cost taken off in brackets; PG CPU = all PostgreSQL server processes during the "
        "run (the machine is shared, so this includes any other load); RSS = peak "
        "resident set; DB conns = peak pg_stat_activity rows for the run's database.",
        "",
        "The fake ran with `--no-window` (the 24-hour window off): these runs measure "
        "raw throughput, not deliveries. dripline sent the demo flow's templates to these "
        "numbers that never wrote, as it would to Meta.",
    ]


def markdown(doc: dict[str, Any], rows: list[Row]) -> str:
    out = [*run_header(doc), table(rows), "Targets:", "", *target_lines(doc["checks"])]
    plans = plan_lines(rows)
    if plans:
        out += ["", *plans]
    out += ["", *legend()]
    return "\n".join(out) + "\n"


def update_readme(readme: Path, body: str) -> bool:
    """Replace the text between the markers (or add the section at the end)."""
    text = readme.read_text() if readme.exists() else ""
    block = f"{START}\n{body.rstrip()}\n{END}"
    if START in text and END in text:
        new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        new = text.rstrip() + "\n\n## Benchmarks\n\n" + block + "\n"
    if new != text:
        readme.write_text(new)
        return True
    return False
