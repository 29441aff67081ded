"""Scenario 14's start-up, variants side by side: CPU as well as wall time.

    python -m bench.startup_cpu --backend sqlite --runs 6 main=/tmp/main/src branch=-

Each variant is a dripline source tree put first on `PYTHONPATH` (`-`: this checkout's
install as it is). Every run spawns `dripline run --once` with one message due at the
fake (latency 0, an empty flows directory, as scenario 14), the variants taking turns,
and records the time from spawn to the message's arrival and the process's CPU (user +
sys from `wait4`). Wall time on a shared machine follows the load; CPU much less, which
is why this exists. Trees are used as they are: byte-compile them (`python -m
compileall`) or not, as the comparison needs (`Bench()` compiles only the dripline the
harness itself imports).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.harness import (
    APP_SECRET,
    PG_SERVER_URL,
    PHONE_NUMBER_ID,
    TOKEN,
    clean_env,
    enroll,
    pg_admin,
    running_fake,
    spawn,
    with_database,
)
from dripline.store import migrate_database

CODE = (
    "import sys\nfrom dripline.cli import main\nsys.argv = ['dripline', 'run', '--once']\nmain()\n"
)


class _Databases:
    """Fresh databases named `startup_*` (SQLite files, or copies of one migrated
    PostgreSQL template); the PostgreSQL ones are dropped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.template: str | None = None
        self.created: list[str] = []

    async def fresh(self, backend: str) -> str:
        name = f"startup_{uuid.uuid4().hex[:8]}"
        if backend == "sqlite":
            return f"sqlite:///{self.workdir / name}.db"
        if self.template is None:
            self.template = f"startup_tpl_{uuid.uuid4().hex[:8]}"
            await pg_admin(f'CREATE DATABASE "{self.template}"')
            self.created.append(self.template)
            await migrate_database(with_database(PG_SERVER_URL, self.template))
        await pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return with_database(PG_SERVER_URL, name)

    async def drop(self) -> None:
        for name in reversed(self.created):
            await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def measure(
    backend: str, runs: int, variants: list[tuple[str, str]]
) -> dict[str, dict[str, list[float]]]:
    """{variant: {"wall": [...], "cpu": [...]}} over `runs` turns of every variant."""
    results: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n, _ in variants}
    with tempfile.TemporaryDirectory(prefix="dripline-startup-") as tmp:
        work = Path(tmp)
        (work / "flows").mkdir()
        dbs = _Databases(work)
        try:
            async with running_fake(
                work, rate_per_s=1000.0, latency_ms=0.0, latency_p99_ms=None
            ) as fake:
                for _ in range(runs):
                    for name, tree in variants:
                        url = await dbs.fresh(backend)
                        await enroll(url, [datetime.now(UTC) - timedelta(seconds=1)])
                        await fake.reset()
                        env = clean_env(
                            DRIPLINE_DATABASE_URL=url,
                            DRIPLINE_WHATSAPP_ACCESS_TOKEN=TOKEN,
                            DRIPLINE_WHATSAPP_PHONE_NUMBER_ID=PHONE_NUMBER_ID,
                            DRIPLINE_WHATSAPP_APP_SECRET=APP_SECRET,
                            DRIPLINE_PAIR_INTERVAL_S="0",
                            DRIPLINE_LOG_LEVEL="WARNING",
                            DRIPLINE_FLOWS_DIR=str(work / "flows"),
                            DRIPLINE_WHATSAPP_BASE_URL=fake.base_url,
                        )
                        env.pop("PYTHONPATH", None)
                        if tree != "-":
                            env["PYTHONPATH"] = tree
                        started = time.time()
                        child = spawn(name, [sys.executable, "-c", CODE], env, work)
                        usage = await child.wait(60)
                        arrivals = [
                            float(m.get("arrived_wall") or m["received_wall"])
                            for m in await fake.messages()
                        ]
                        if arrivals:
                            results[name]["wall"].append(min(arrivals) - started)
                        results[name]["cpu"].append(usage.cpu_s)
        finally:
            await dbs.drop()
    return results


def _summary(values: list[float]) -> str:
    if not values:
        return "-"
    listed = ", ".join(f"{v:.3f}" for v in sorted(values))
    return f"median {statistics.median(values):.3f} (min {min(values):.3f}; {listed})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup_cpu", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("variants", nargs="+", metavar="NAME=TREE")
    args = parser.parse_args(argv)
    variants = [tuple(v.split("=", 1)) for v in args.variants]
    if any(len(v) != 2 for v in variants):
        parser.error("variants are NAME=TREE (TREE: a src/ directory, or - for this install)")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{datetime.now(UTC):%H:%M:%S} UTC, load {load}, {args.backend}, {args.runs} runs")
    results = asyncio.run(measure(args.backend, args.runs, [(n, t) for n, t in variants]))
    for name, got in results.items():
        print(f"{name}: cpu s {_summary(got['cpu'])}")
        print(f"{' ' * len(name)}  wall s {_summary(got['wall'])}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{datetime.now(UTC):%H:%M:%S} UTC, load {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
