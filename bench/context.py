"""What one benchmark run's scenarios share: sizes, rows, checks and the `Bench`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bench import pq
from bench.harness import (
    APP_SECRET,
    DRIPLINE,
    PHONE_NUMBER_ID,
    TOKEN,
    Child,
    ConnectionCounter,
    Databases,
    Fake,
    PostgresCpu,
    clean_env,
    compile_dripline,
    digits,
    phone,
    settle,
    spawn,
    stop_all,
)
from bench.machine import CpuTrace, MachineLoad, Steady, proc_cpu_s, sample_others
from bench.measure import Row, bound, from_record
from bench.windows import WindowCpu, messages_in, read_at, window_usage
from dripline.planner import Arrivals, LatencyModel, PlanSettings, simulate
from dripline.settings import Policy

LATENCY_MEAN_S = 0.150
LATENCY_P99_S = 0.600
RATE = 1000.0
CONCURRENCY = 300
BATCH = 1000
BACKENDS = ("sqlite", "postgres")
REPO_ROOT = str(Path(__file__).resolve().parent.parent)


class Progress(Protocol):
    def start(self, label: str, total: int) -> None: ...
    def advance(self, done: int, info: str = "") -> None: ...
    def finish(self, info: str = "") -> None: ...
    def note(self, text: str) -> None: ...


@dataclass
class Check:
    scenario: str
    target: str
    value: str
    met: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "target": self.target,
            "value": self.value,
            "met": self.met,
        }


@dataclass
class Sizes:
    backlog: int
    seed_backlog: int
    seed_interval_s: float
    steady_s: float
    throttled: int
    scale_rows: int
    scale_due: int
    scale_later: int
    claim_samples: int
    webhook_rate: int
    webhook_s: float
    webhook_per_post: int

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(400, 40, 0.5, 1.5, 160, 20_000, 200, 2_000, 50, 600, 1.0, 50)
        return cls(20_000, 300, 3.0, 60.0, 4_000, 1_000_000, 10_000, 190_000, 300, 3_000, 30.0, 50)


@dataclass
class RunResult:
    row: Row
    children: list[Child]
    history: list[tuple[float, int, int, int]] = field(default_factory=list)
    summaries: list[Any] = field(default_factory=list)
    # CPU per message between 10% and 90% of the messages, and the machine before the
    # run (bench/machine.py): the planner's CPU inputs (bench/predict.py).
    steady: Steady | None = None
    load: MachineLoad | None = None
    window: WindowCpu | None = None  # the CPU read inside `run_dripline(window=...)`


def lognormal_latency() -> LatencyModel:
    return LatencyModel.lognormal(LATENCY_MEAN_S, LATENCY_P99_S)


class Bench:
    """State shared by the scenarios of one benchmark run."""

    def __init__(self, *, quick: bool, workdir: Path, progress: Progress) -> None:
        self.quick = quick
        self.sizes = Sizes.for_run(quick)
        self.workdir = workdir
        self.flows_dir = workdir / "flows"
        self.flows_dir.mkdir(exist_ok=True)
        self.progress = progress
        compile_dripline()  # the children read bytecode, as an installed dripline does
        self.dbs = Databases(workdir)
        self.rows: list[Row] = []
        self.checks: list[Check] = []
        self.baseline_cpu_s: dict[str, float] = {}
        self.extra: dict[str, Any] = {}
        # Procrastinate's fetch polling: its default (5 s) and 0.5 s; quick runs one.
        self.polls: tuple[float | None, ...] = (0.5,) if quick else (None, 0.5)

    # ------------------------------------------------------------ bookkeeping
    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def check(self, scenario: str, target: str, value: str, met: bool) -> None:
        self.checks.append(Check(scenario, target, value, bool(met)))

    def dripline_env(self, url: str, fake: Fake | None, **extra: str) -> dict[str, str]:
        env = clean_env(
            DRIPLINE_DATABASE_URL=url,
            DRIPLINE_WHATSAPP_ACCESS_TOKEN=TOKEN,
            DRIPLINE_WHATSAPP_PHONE_NUMBER_ID=PHONE_NUMBER_ID,
            DRIPLINE_WHATSAPP_APP_SECRET=APP_SECRET,
            DRIPLINE_PAIR_INTERVAL_S="0",
            DRIPLINE_LOG_LEVEL="WARNING",
            DRIPLINE_FLOWS_DIR=str(self.flows_dir),
        )
        if fake is not None:
            env["DRIPLINE_WHATSAPP_BASE_URL"] = fake.base_url
        env.update(extra)
        return env

    async def baseline(self, backend: str) -> float:
        """CPU seconds of a dispatcher that starts, finds nothing due and exits."""
        if backend not in self.baseline_cpu_s:
            url = await self.dbs.fresh(backend, "idle")
            child = spawn(
                "idle",
                [DRIPLINE, "run", "--once", "--json"],
                self.dripline_env(url, None, DRIPLINE_WHATSAPP_BASE_URL="http://127.0.0.1:9"),
                self.workdir,
            )
            usage = await child.wait(60)
            self.baseline_cpu_s[backend] = usage.cpu_s
        return self.baseline_cpu_s[backend]

    # ------------------------------------------------------------ driving runs
    async def drive(
        self,
        children: list[Child],
        fake: Fake,
        expected: int,
        timeout_s: float,
        label: str,
        *,
        settle: Callable[[], Awaitable[bool]] | None = None,
        pg: PostgresCpu | None = None,
        trace: CpuTrace | None = None,
        until: float = 0.0,
    ) -> list[tuple[float, int, int, int]]:
        """Poll the fake until `expected` messages are accepted (and the epoch time
        `until` has passed), the children exit or `timeout_s` passes; then SIGTERM them
        all. Returns (wall time, requests, accepted, throttled) samples."""
        history: list[tuple[float, int, int, int]] = []
        self.progress.start(label, expected)
        deadline = time.monotonic() + timeout_s
        while True:
            stats = await fake.stats()
            history.append(
                (
                    time.time(),
                    int(stats["requests"]),
                    int(stats["accepted"]),
                    int(stats["throttled"]),
                )
            )
            for child in children:
                child.sample_rss()
            if pg is not None:
                pg.sample()
            accepted = int(stats["accepted"])
            if trace is not None:
                running = [c.pid for c in children if c.usage is None]
                trace.add(
                    accepted,
                    proc_cpu_s(running),
                    proc_cpu_s([fake.child.pid]),
                    [*running, fake.child.pid, *trace.backends()],
                )
            self.progress.advance(min(accepted, expected), f"130429: {stats['throttled']}")
            if accepted >= expected and time.time() >= until and (settle is None or await settle()):
                break
            if time.monotonic() > deadline:
                self.progress.note(f"{label}: time limit reached at {accepted}/{expected}")
                break
            if not any(c.running() for c in children):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)  # in-flight duplicates, if any, land in the record
        if pg is not None:
            pg.sample()
        await stop_all(children, 40)
        stats = await fake.stats()
        history.append(
            (time.time(), int(stats["requests"]), int(stats["accepted"]), int(stats["throttled"]))
        )
        self.progress.finish()
        return history

    async def run_dripline(
        self,
        *,
        scenario: str,
        run: str,
        backend: str,
        url: str,
        fake: Fake,
        due_by_to: dict[str, float],
        workers: int = 1,
        policy: str = "static",
        rate: float = RATE,
        concurrency: int = CONCURRENCY,
        batch: int = BATCH,
        timeout_s: float,
        bound_per_s: float | None = None,
        extra_env: dict[str, str] | None = None,
        window: tuple[float, float] | None = None,
    ) -> RunResult:
        """One measured `dripline run`. With `window` (epoch start, end; one worker) the
        dispatcher's CPU is also read at those two times (`bench/windows.py`), and the
        run is kept going until the end."""
        await fake.reset()
        base_cpu = await self.baseline(backend)
        await settle(backend)
        # The machine before the run, for the planner (bench/predict.py); a quick run
        # (a smoke test with a time budget) looks for 0.2 s only.
        load = await asyncio.to_thread(sample_others, [fake.child.pid], 0.2 if self.quick else 1.0)
        counter = ConnectionCounter(url)
        counter.start()
        pg = PostgresCpu() if backend == "postgres" else None
        argv = [
            DRIPLINE,
            "run",
            "--json",
            "--max-seconds",
            str(int(timeout_s + 30)),
            "--policy",
            policy,
            "--rate",
            str(rate),
            "--concurrency",
            str(concurrency),
            "--batch-limit",
            str(batch),
        ]
        env = self.dripline_env(url, fake, **(extra_env or {}))
        children = [spawn(f"dripline{i}", argv, env, self.workdir) for i in range(workers)]
        trace = CpuTrace()
        if backend == "postgres":
            trace = CpuTrace(counter.backend_cpu_s, lambda: counter.backends)
        reader = None
        if window is not None:
            db = counter.backend_cpu_s if backend == "postgres" else None
            reader = asyncio.ensure_future(read_at(children[0].pid, window, db))
        history = await self.drive(
            children,
            fake,
            len(due_by_to),
            timeout_s,
            f"{scenario} {run}",
            pg=pg,
            trace=trace,
            until=window[1] if window is not None else 0.0,
        )
        in_window = None
        if reader is not None and window is not None:
            readings = await reader  # done: the children were kept past its last time
            if len(readings) == 2:
                (t0, c0, d0), (t1, c1, d1) = readings
                dbs = (d0, d1) if d0 is not None and d1 is not None else None
                n_in = messages_in(due_by_to.values(), *window)
                in_window = window_usage((t0, c0), (t1, c1), n_in, dbs)
        steady = trace.steady(len(due_by_to))
        pg_cpu = pg.used_s if pg is not None else None
        conns = await counter.stop()
        received = await fake.messages()
        stats = await fake.stats()
        row = Row(scenario=scenario, run=run, system="dripline", backend=backend)
        b = (
            bound_per_s
            if bound_per_s is not None
            else bound(rate, concurrency * workers, LATENCY_MEAN_S)
        )
        from_record(row, received, due_by_to, stats, bound_per_s=b)
        self._usage(row, children, conns, pg_cpu, base_cpu * workers)
        summaries = [c.stdout_json() for c in children]
        bad = [c for c in children if c.usage is not None and c.usage.exit_code not in (0, -15)]
        if bad:
            row.notes += f" exit {[c.usage.exit_code for c in bad if c.usage]}: " + bad[
                0
            ].stderr_tail(3)
        failed = sum(int(s.get("failed", 0)) for s in summaries if isinstance(s, dict))
        row.extra["failed"] = failed
        row.extra["workers"] = workers
        row.extra["policy"] = policy
        row.extra["concurrency_per_worker"] = concurrency
        row.extra["rate_per_s"] = rate
        row.extra["machine_before"] = load.as_dict()
        if steady is not None:
            row.extra["steady_cpu"] = steady.as_dict()
        if in_window is not None:
            row.extra["window_cpu"] = in_window.as_dict()
        return RunResult(self.add(row), children, history, summaries, steady, load, in_window)

    def _usage(
        self,
        row: Row,
        children: Sequence[Child],
        conns: int | str,
        pg_cpu_s: float | None,
        baseline_cpu_s: float,
    ) -> None:
        cpu = sum(c.usage.cpu_s for c in children if c.usage)
        n = max(1, row.messages)
        row.cpu_ms_per_msg = round(cpu * 1000 / n, 3)
        if baseline_cpu_s:
            row.cpu_ms_per_msg_net = round(max(0.0, cpu - baseline_cpu_s) * 1000 / n, 3)
        if pg_cpu_s is not None:
            row.pg_cpu_ms_per_msg = round(pg_cpu_s * 1000 / n, 3)
        row.peak_rss_mb = round(max((c.peak_mb for c in children), default=0), 1)
        row.db_connections = conns
        row.extra["cpu_s"] = round(cpu, 3)

    async def run_procrastinate(
        self,
        *,
        scenario: str,
        fake: Fake,
        jobs: Sequence[tuple[int, datetime]],
        poll_s: float | None,
        timeout_s: float,
        workers: int = 2,
        concurrency_total: int = CONCURRENCY,
    ) -> Row:
        """Procrastinate workers on their own database of the same PostgreSQL server."""
        label = f"poll {poll_s:g} s" if poll_s is not None else "default poll (5 s)"
        dsn = await self.dbs.plain_pg("pq")
        await pq.prepare(dsn)
        self.progress.note(f"{scenario} procrastinate: deferring {len(jobs):,} jobs")
        await pq.defer(dsn, [(phone(i), f"p{i}", due) for i, due in jobs])
        await fake.reset()
        counter = ConnectionCounter(dsn)
        counter.start()
        pg = PostgresCpu()
        per = concurrency_total // workers
        argv = [
            sys.executable,
            "-m",
            "bench.pq",
            "--dsn",
            dsn,
            "--concurrency",
            str(per),
            "--base-url",
            fake.base_url,
            "--token",
            TOKEN,
        ]
        if poll_s is not None:
            argv += ["--poll-s", str(poll_s)]
        env = clean_env(PYTHONPATH=REPO_ROOT)
        children = [spawn(f"pq{i}", argv, env, self.workdir) for i in range(workers)]
        due_by_to = {digits(i): due.timestamp() for i, due in jobs}
        await self.drive(children, fake, len(jobs), timeout_s, f"{scenario} procrastinate", pg=pg)
        pg_cpu = pg.used_s
        conns = await counter.stop()
        received = await fake.messages()
        stats = await fake.stats()
        row = Row(
            scenario=scenario,
            run=f"Procrastinate, {workers} workers x {per}, {label}",
            system="procrastinate",
            backend="postgres",
        )
        from_record(
            row,
            received,
            due_by_to,
            stats,
            bound_per_s=bound(RATE, concurrency_total, LATENCY_MEAN_S),
        )
        self._usage(row, children, conns, pg_cpu, 0.0)
        bad = [c for c in children if c.usage is not None and c.usage.exit_code not in (0, -15)]
        if bad:
            row.notes += " " + bad[0].stderr_tail(3)
        row.extra["poll_s"] = poll_s
        return self.add(row)

    def seed_sim(self, scenario: str, run: str, arrivals: Arrivals | Sequence[float]) -> Row:
        """The seed's design (every 300 s, 30 rows, 5 at a time), simulated."""
        sim = simulate(
            PlanSettings(
                policy=Policy.SEED_CRON,
                batch_limit=30,
                concurrency=5,
                interval_s=300.0,
                rate_per_s=None,
            ),
            lognormal_latency(),
            arrivals,
        )
        row = Row(
            scenario=scenario,
            run=run,
            system="seed-cron",
            backend="planner",
            measured=False,
            messages=sim.sent,
            wall_s=round(sim.drain_s, 1),
            throughput_per_s=round(sim.throughput_per_s, 3),
            bound_per_s=round(bound(None, 5, LATENCY_MEAN_S), 1),
            lag_p50_ms=round(sim.lag_p50_s * 1000, 1),
            lag_p99_ms=round(sim.lag_p99_s * 1000, 1),
            lag_max_ms=round(sim.lag_max_s * 1000, 1),
            db_connections=5,
            notes=f"simulated by dripline.planner: drain {sim.drain_s / 3600:.1f} h, "
            f"{sim.runs} cron runs",
        )
        row.ratio_to_bound = round(sim.throughput_per_s / row.bound_per_s, 4)  # type: ignore[operator]
        return self.add(row)


def utc_now() -> datetime:
    return datetime.now(UTC)


def lossless(row: Row) -> bool:
    """No message sent twice and none missing: every scenario's first check."""
    return row.duplicates == 0 and row.missing == 0
