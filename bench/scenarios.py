"""The scenarios of issue 7, each a coroutine adding rows and checks to a `Bench`."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bench import bulk, pq
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
    enroll,
    free_port,
    phone,
    running_fake,
    spawn,
    stop_all,
)
from bench.machine import CpuTrace, MachineLoad, Steady, proc_cpu_s, sample_others
from bench.measure import Row, bound, from_record, pct
from bench.senders import SENDER_SCENARIOS
from dripline.planner import Arrivals, LatencyModel, PlanSettings, simulate
from dripline.settings import Policy
from dripline.store import open_store
from dripline.whatsapp.webhooks import SIGNATURE_HEADER, sign

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


def _lognormal() -> LatencyModel:
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
    ) -> list[tuple[float, int, int, int]]:
        """Poll the fake until `expected` messages are accepted, the children exit or
        `timeout_s` passes; then SIGTERM them all. Returns (wall time, requests,
        accepted, throttled) samples."""
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
            if accepted >= expected and (settle is None or await settle()):
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
    ) -> RunResult:
        await fake.reset()
        base_cpu = await self.baseline(backend)
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
        history = await self.drive(
            children, fake, len(due_by_to), timeout_s, f"{scenario} {run}", pg=pg, trace=trace
        )
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
        return RunResult(self.add(row), children, history, summaries, steady, load)

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
            _lognormal(),
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


# ---------------------------------------------------------------- helpers
def _now() -> datetime:
    return datetime.now(UTC)


def _ok(row: Row) -> bool:
    return row.duplicates == 0 and row.missing == 0


# ---------------------------------------------------------------- scenario 1 (+6)
async def scenario_1(b: Bench) -> None:
    n = b.sizes.backlog
    results: dict[str, Row] = {}
    async with running_fake(b.workdir, rate_per_s=RATE) as fake:
        for backend in BACKENDS:
            url = await b.dbs.fresh(backend, "s1")
            due = _now()
            await enroll(url, [due] * n)
            res = await b.run_dripline(
                scenario="1",
                run=f"backlog {n:,}, static 300/1000",
                backend=backend,
                url=url,
                fake=fake,
                due_by_to={digits(i): due.timestamp() for i in range(n)},
                timeout_s=max(60.0, n / 100),
            )
            results[backend] = row = res.row
            b.check(
                "1",
                f"{backend}: >= 950 msg/s",
                f"{row.throughput_per_s}",
                (row.throughput_per_s or 0) >= 950,
            )
            b.check(
                "1",
                f"{backend}: CPU <= 0.5 ms/msg",
                f"{row.cpu_ms_per_msg} ({row.cpu_ms_per_msg_net} net of startup)",
                (row.cpu_ms_per_msg or 9) <= 0.5,
            )
            b.check(
                "1",
                f"{backend}: 0 duplicates, 0 missing",
                f"{row.duplicates} / {row.missing}",
                _ok(row),
            )
        # The planner's prediction for the PostgreSQL run.
        sim = simulate(
            PlanSettings(
                policy=Policy.STATIC, batch_limit=BATCH, concurrency=CONCURRENCY, rate_per_s=RATE
            ),
            _lognormal(),
            Arrivals.backlog(n),
        )
        measured = results["postgres"].throughput_per_s or 0.0
        gap = abs(sim.throughput_per_s - measured) / max(measured, 1e-9)
        b.add(
            Row(
                scenario="1",
                run="planner's prediction of the PostgreSQL run",
                system="planner",
                backend="planner",
                measured=False,
                messages=sim.sent,
                wall_s=round(sim.drain_s, 2),
                throughput_per_s=round(sim.throughput_per_s, 1),
                bound_per_s=round(bound(RATE, CONCURRENCY, LATENCY_MEAN_S), 1),
                ratio_to_bound=round(
                    sim.throughput_per_s / bound(RATE, CONCURRENCY, LATENCY_MEAN_S), 3
                ),
                lag_p50_ms=round(sim.lag_p50_s * 1000, 1),
                lag_p99_ms=round(sim.lag_p99_s * 1000, 1),
                lag_max_ms=round(sim.lag_max_s * 1000, 1),
                db_connections=sim.db_connections,
                notes=f"measured/predicted throughput differ by {gap:.1%}",
            )
        )
        b.check(
            "planner",
            "prediction within 10% of the measured throughput (scenario 1, PG)",
            f"{sim.throughput_per_s:.0f} vs {measured:.0f} msg/s ({gap:.1%})",
            gap <= 0.10,
        )

        # Scenario 6: the seed's design, simulated at full size and run for real scaled down.
        seed = b.seed_sim(
            "6 (1)", f"seed-cron 30/5 every 300 s, backlog {n:,}", Arrivals.backlog(n)
        )
        ns, interval = b.sizes.seed_backlog, b.sizes.seed_interval_s
        url = await b.dbs.fresh("postgres", "s6seed")
        due = _now()
        await enroll(url, [due] * ns)
        res = await b.run_dripline(
            scenario="6 (1)",
            run=f"seed-cron for real, interval scaled to {interval:g} s, backlog {ns}",
            backend="postgres",
            url=url,
            fake=fake,
            due_by_to={digits(i): due.timestamp() for i in range(ns)},
            policy="seed-cron",
            timeout_s=ns / 30 * interval + 30,
            extra_env={"DRIPLINE_INTERVAL_S": str(interval)},
            bound_per_s=bound(None, 5, LATENCY_MEAN_S),
        )
        res.row.notes = (
            f"interval {interval:g} s instead of 300 s (x{300 / interval:g} "
            f"faster than the seed); cron bound {30 / interval:g} msg/s"
        )
        # Procrastinate on the same backlog.
        pq_rows = []
        for poll in b.polls:
            due = _now() - timedelta(seconds=1)
            pq_rows.append(
                await b.run_procrastinate(
                    scenario="6 (1)",
                    fake=fake,
                    jobs=[(i, due) for i in range(n)],
                    poll_s=poll,
                    timeout_s=max(90.0, n / 50),
                )
            )
    d = results["postgres"].throughput_per_s or 0.0
    ratios = {"seed-cron (simulated)": d / max(seed.throughput_per_s or 1e-9, 1e-9)}
    for r in pq_rows:
        ratios[r.run] = d / max(r.throughput_per_s or 1e-9, 1e-9)
    b.extra["ratios_scenario_1"] = {k: round(v, 1) for k, v in ratios.items()}
    for r in pq_rows:
        b.check(
            "6",
            f"dripline / {r.run} throughput (scenario 1)",
            f"{ratios[r.run]:.1f}x",
            ratios[r.run] > 1,
        )
    b.check(
        "6",
        "dripline / seed-cron throughput (scenario 1)",
        f"{ratios['seed-cron (simulated)']:,.0f}x",
        True,
    )


# ---------------------------------------------------------------- scenario 2
async def scenario_2(b: Bench) -> None:
    n = b.sizes.backlog
    async with running_fake(b.workdir, rate_per_s=RATE) as fake:
        for workers in (2, 4):
            url = await b.dbs.fresh("postgres", f"s2w{workers}")
            due = _now()
            await enroll(url, [due] * n)
            res = await b.run_dripline(
                scenario="2",
                run=f"{workers} workers x {CONCURRENCY // workers}, backlog {n:,}",
                backend="postgres",
                url=url,
                fake=fake,
                due_by_to={digits(i): due.timestamp() for i in range(n)},
                workers=workers,
                concurrency=CONCURRENCY // workers,
                timeout_s=max(60.0, n / 100),
                bound_per_s=bound(RATE, CONCURRENCY, LATENCY_MEAN_S),
            )
            row = res.row
            share = (row.throttled_130429 or 0) / max(1, row.messages)
            row.extra["throttled_share"] = round(share, 4)
            b.check(
                "2",
                f"{workers} workers: aggregate >= 0.95 of bound",
                f"{row.ratio_to_bound}",
                (row.ratio_to_bound or 0) >= 0.95,
            )
            b.check(
                "2",
                f"{workers} workers: 130429 < 1% of sends",
                f"{row.throttled_130429} ({share:.2%})",
                share < 0.01,
            )
            b.check(
                "2",
                f"{workers} workers: 0 duplicates, 0 missing",
                f"{row.duplicates} / {row.missing}",
                _ok(row),
            )


# ---------------------------------------------------------------- scenario 3 (+6)
def _steady_due(t0: datetime, duration_s: float, rate_per_s: float) -> list[datetime]:
    """Groups of 5 due every 5 / rate seconds (one Procrastinate batch per group)."""
    step = 5 / rate_per_s
    groups = int(duration_s / step)
    return [t0 + timedelta(seconds=g * step) for g in range(groups) for _ in range(5)]


async def scenario_3(b: Bench) -> None:
    dur = b.sizes.steady_s
    rate = RATE / 2
    lead = 3.0 if b.quick else 10.0
    rows: dict[str, Row] = {}
    async with running_fake(b.workdir, rate_per_s=RATE) as fake:
        for backend in BACKENDS:
            url = await b.dbs.fresh(backend, "s3")
            due = _steady_due(_now() + timedelta(seconds=lead), dur, rate)
            await enroll(url, due)
            res = await b.run_dripline(
                scenario="3",
                run=f"steady {rate:g}/s for {dur:g} s",
                backend=backend,
                url=url,
                fake=fake,
                due_by_to={digits(i): d.timestamp() for i, d in enumerate(due)},
                timeout_s=lead + dur + 60,
            )
            rows[backend] = row = res.row
            b.check(
                "3",
                f"{backend}: lag p99 < 100 ms",
                f"{row.lag_p99_ms} ms",
                (row.lag_p99_ms or 1e9) < 100,
            )
            b.check(
                "3",
                f"{backend}: 0 duplicates, 0 missing",
                f"{row.duplicates} / {row.missing}",
                _ok(row),
            )
        t_rel = [i / rate for i in range(len(due))]
        sim_row = b.seed_sim(
            "6 (3)",
            f"seed-cron 30/5 every 300 s, {rate:g}/s for {dur:g} s",
            [5 * (int(t * rate) // 5) / rate for t in t_rel],
        )
        pq_rows = []
        for poll in b.polls:
            pq_lead = 4.0 if b.quick else 25.0
            due = _steady_due(_now() + timedelta(seconds=pq_lead), dur, rate)
            pq_rows.append(
                await b.run_procrastinate(
                    scenario="6 (3)",
                    fake=fake,
                    jobs=list(enumerate(due)),
                    poll_s=poll,
                    timeout_s=pq_lead + dur + 60,
                )
            )
    d = rows["postgres"].lag_p99_ms
    if not d:
        b.check("6", "lag p99 ratios (scenario 3)", "dripline's PostgreSQL run failed", False)
        return
    ratios = {"seed-cron (simulated)": (sim_row.lag_p99_ms or 0) / d}
    for r in pq_rows:
        ratios[r.run] = (r.lag_p99_ms or 0) / d
    b.extra["lag_p99_ratios_scenario_3"] = {k: round(v, 1) for k, v in ratios.items()}
    for name, ratio in ratios.items():
        b.check("6", f"{name} lag p99 / dripline's (scenario 3, PG)", f"{ratio:,.1f}x", ratio > 1)


# ---------------------------------------------------------------- scenario 4
async def scenario_4(b: Bench) -> None:
    n = b.sizes.throttled
    api_rate = 80.0
    async with running_fake(b.workdir, rate_per_s=api_rate) as fake:
        for policy in ("static", "adaptive"):
            url = await b.dbs.fresh("sqlite", f"s4{policy}")
            due = _now()
            await enroll(url, [due] * n)
            res = await b.run_dripline(
                scenario="4",
                run=f"fake 80/s, dispatcher 100/s, {policy}",
                backend="sqlite",
                url=url,
                fake=fake,
                due_by_to={digits(i): due.timestamp() for i in range(n)},
                policy=policy,
                rate=100.0,
                concurrency=64,
                batch=200,
                timeout_s=n / 40 + 60,
                bound_per_s=api_rate,
            )
            row = res.row
            hist = res.history
            first = min((h[0] for h in hist if h[2] > 0), default=hist[0][0])
            after = [h for h in hist if h[0] >= first + 5.0]
            if len(after) >= 2:
                req = after[-1][1] - after[0][1]
                thr = after[-1][3] - after[0][3]
            else:
                req, thr = 0, 0
            share = thr / req if req else 0.0
            row.extra["throttled_after_5s"] = {
                "requests": req,
                "throttled": thr,
                "share": round(share, 4),
            }
            row.notes = f"throttled after the first 5 s: {thr} of {req} attempts ({share:.2%})"
            lost = (row.missing or 0) + int(row.extra.get("failed", 0))
            b.check(
                "4",
                f"{policy}: delivered >= 0.97 x 80/s",
                f"{row.throughput_per_s}",
                (row.throughput_per_s or 0) >= 0.97 * api_rate,
            )
            b.check(
                "4", f"{policy}: 130429 < 1% of attempts after 5 s", f"{share:.2%}", share < 0.01
            )
            b.check(
                "4",
                f"{policy}: 0 lost, 0 duplicates",
                f"{lost} / {row.duplicates}",
                lost == 0 and row.duplicates == 0,
            )


# ---------------------------------------------------------------- scenario 5
def rss_while_sending(res: RunResult) -> tuple[float, float]:
    """The first child's RSS a quarter of the way through the sending and at its end (MB):
    "flat" compares these, leaving out the start-up's growth before the first send."""
    sending = [h[0] for h in res.history if h[2] > 0]
    t_first = sending[0] if sending else 0.0
    t_last = sending[-1] if sending else 0.0
    during = [(t, mb) for t, mb in res.children[0].rss_samples if t_first <= t <= t_last]
    quarter = t_first + (t_last - t_first) / 4
    early = next((mb for t, mb in during if t >= quarter), during[0][1] if during else 0.0)
    late = during[-1][1] if during else 0.0
    return early, late


async def scenario_5(b: Bench) -> None:
    s = b.sizes
    async with running_fake(b.workdir, rate_per_s=RATE) as fake:
        for backend in BACKENDS:
            url = await b.dbs.fresh(backend, "s5")
            if backend == "sqlite":
                store = await open_store(url, pool_size=1)  # creates the schema
                await store.close()
            b.progress.note(f"5 {backend}: loading {s.scale_rows:,} conversations")
            load_s = await bulk.load_conversations(url, s.scale_rows, s.scale_due, s.scale_later)
            plan = await bulk.explain_claim(url, 100)
            # Claim timing: claim 100, release, again (the due set stays the same).
            times = await bulk.claim_timings(url, s.claim_samples)
            due_at = _now() - timedelta(seconds=1)
            res = await b.run_dripline(
                scenario="5",
                run=f"{s.scale_rows:,} rows, {s.scale_due:,} due",
                backend=backend,
                url=url,
                fake=fake,
                due_by_to={digits(i): due_at.timestamp() for i in range(1, s.scale_due + 1)},
                timeout_s=max(60.0, s.scale_due / 100),
            )
            row = res.row
            child = res.children[0]
            early, late = rss_while_sending(res)
            rss = [mb for _, mb in child.rss_samples]
            p50, p99 = pct(times, 0.5), pct(times, 0.99)
            row.extra.update(
                load_s=round(load_s, 1),
                claim_ms_p50=round(p50, 2),
                claim_ms_p99=round(p99, 2),
                claim_ms_max=round(times[-1], 2),
                claim_limit=100,
                claims=len(times),
                plan=plan,
                rss_mb_samples=[round(x, 1) for x in rss],
                rss_mb_at_25pct=round(early, 1),
                rss_mb_last=round(late, 1),
            )
            row.notes = (
                f"claim of 100: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(times)}; "
                f"RSS {early:.0f} -> {late:.0f} MB (25% of sending -> end); load {load_s:.0f} s"
            )
            b.check("5", f"{backend}: claim p99 < 5 ms", f"{p99:.2f} ms", p99 < 5)
            b.check(
                "5",
                f"{backend}: dispatcher RSS < 150 MB",
                f"{row.peak_rss_mb} MB",
                (row.peak_rss_mb or 1e9) < 150,
            )
            b.check(
                "5",
                f"{backend}: RSS flat (end within 10% of the 25% mark)",
                f"{early:.0f} -> {late:.0f} MB",
                late <= early * 1.10 + 1,
            )
            b.check(
                "5",
                f"{backend}: 0 duplicates, 0 missing",
                f"{row.duplicates} / {row.missing}",
                _ok(row),
            )


# ---------------------------------------------------------------- scenario 7
def _status_body(ids: Sequence[int], status: str, ts: int) -> bytes:
    import json

    statuses = [
        {"id": f"wamid.B{i}", "status": status, "timestamp": str(ts), "recipient_id": digits(i)}
        for i in ids
    ]
    doc = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "100000000000000",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550000000",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            "statuses": statuses,
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


async def scenario_7(b: Bench) -> None:
    s = b.sizes
    total = int(s.webhook_rate * s.webhook_s)
    per_post = s.webhook_per_post
    n_msgs = total // 2  # each message gets `delivered`, then `read`
    for backend in BACKENDS:
        await _webhooks_on(b, backend, total, per_post, n_msgs)


async def _webhooks_on(b: Bench, backend: str, total: int, per_post: int, n_msgs: int) -> None:
    s = b.sizes
    url = await b.dbs.fresh(backend, "s7")
    if backend == "sqlite":
        store = await open_store(url, pool_size=1)
        await store.close()
    await bulk.load_sent_messages(url, n_msgs)
    port = free_port()
    counter = ConnectionCounter(url)
    counter.start()
    env = b.dripline_env(url, None)
    server = spawn("serve", [DRIPLINE, "serve", "--port", str(port)], env, b.workdir)
    base = f"http://127.0.0.1:{port}"
    bodies: list[bytes] = []
    ts = int(time.time())
    for status, offset in (("delivered", 0), ("read", 1)):
        for lo in range(1, n_msgs + 1, per_post):
            ids = range(lo, min(n_msgs, lo + per_post - 1) + 1)
            bodies.append(_status_body(list(ids), status, ts + offset))
    acks: list[float] = []
    errors = 0
    why_failed: Counter[str] = Counter()
    posts_per_s = s.webhook_rate / per_post
    pg = PostgresCpu() if backend == "postgres" else None
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=256)
    ) as http:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or not server.running():
                raise RuntimeError(f"dripline serve did not start: {server.stderr_tail()}")
            await asyncio.sleep(0.1)

        async def post(raw: bytes) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with http.post(
                    f"{base}/webhook",
                    data=raw,
                    headers={
                        SIGNATURE_HEADER: sign(raw, APP_SECRET),
                        "Content-Type": "application/json",
                    },
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                        why_failed[f"HTTP {resp.status}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors += 1
                why_failed[type(exc).__name__] += 1
            acks.append(time.perf_counter() - t0)

        b.progress.start(f"7 {backend} webhooks", len(bodies))
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        for k, raw in enumerate(bodies):  # open loop: POST k goes at start + k / rate
            delay = start + k / posts_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(raw)))
            if k % 20 == 0:
                b.progress.advance(len(acks))
                server.sample_rss()
                if pg is not None:
                    pg.sample()
        await asyncio.gather(*tasks)
        intake_s = time.perf_counter() - start
        b.progress.advance(len(acks))
        # Wait (bounded) for the processor to apply the inbox.
        deadline = time.monotonic() + 120
        counts = await bulk.status_counts(url)
        while counts.get("_inbox_pending", 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if pg is not None:
                pg.sample()
            counts = await bulk.status_counts(url)
        applied_s = time.perf_counter() - start
        b.progress.finish()
    await stop_all([server], 30)
    conns = await counter.stop()
    pg_cpu = pg.used_s if pg is not None else None
    acks.sort()
    over_1s = sum(1 for a in acks if a > 1.0) / max(1, len(acks))
    applied = counts.get("read", 0) * 2
    lost = total - applied
    row = Row(
        scenario="7",
        run=f"webhooks {s.webhook_rate:,}/s for {s.webhook_s:g} s, {per_post} per POST",
        system="dripline serve",
        backend=backend,
        messages=total,
        wall_s=round(intake_s, 2),
        throughput_per_s=round(total / intake_s, 1),
        bound_per_s=float(s.webhook_rate),
        ratio_to_bound=round(total / intake_s / s.webhook_rate, 3),
        lag_p50_ms=round(statistics.median(acks) * 1000, 1) if acks else None,
        lag_p95_ms=round(pct(acks, 0.95) * 1000, 1),
        lag_p99_ms=round(pct(acks, 0.99) * 1000, 1),
        lag_max_ms=round(acks[-1] * 1000, 1) if acks else None,
        duplicates=0,
        missing=lost,
        db_connections=conns,
        notes=f"lag columns are POST ack times; {errors} failed POSTs; applied at "
        f"{total / applied_s:,.0f} statuses/s; {over_1s:.2%} acks over 1 s",
    )
    b._usage(row, [server], conns, pg_cpu, 0.0)
    row.extra.update(
        posts=len(bodies),
        failed_posts=errors,
        failed_posts_why=dict(why_failed),
        server_log_tail=server.stderr_tail(20) if errors else "",
        ack_over_1s=round(over_1s, 4),
        applied_s=round(applied_s, 2),
        status_counts=counts,
    )
    b.add(row)
    b.check(
        "7",
        f"{backend}: none lost",
        f"{lost} lost, {errors} failed POSTs",
        lost == 0 and errors == 0 and counts.get("_inbox_errors", 0) == 0,
    )
    b.check(
        "7",
        f"{backend}: median ack <= 250 ms",
        f"{row.lag_p50_ms} ms",
        (row.lag_p50_ms or 1e9) <= 250,
    )
    b.check("7", f"{backend}: < 1% of acks over 1 s", f"{over_1s:.2%}", over_1s < 0.01)


SCENARIOS: dict[int, Callable[[Bench], Awaitable[None]]] = {
    1: scenario_1,
    2: scenario_2,
    3: scenario_3,
    4: scenario_4,
    5: scenario_5,
    7: scenario_7,
    **SENDER_SCENARIOS,  # 20, 21: several sender numbers (bench/senders.py)
}
# Scenario 6 (the side-by-side comparison) runs inside 1 and 3.
SCENARIO_6_IN = (1, 3)
# What a run without --scenario runs (and the smoke test checks); issue 14's scenarios
# (bench/round2.py: 11, 13-15; bench/bigtable.py: 16) and the named ones (soak, chaos-*)
# run when named.
DEFAULT_SCENARIOS = (1, 2, 3, 4, 5, 7, 20, 21)


def selected(wanted: Sequence[int]) -> list[int]:
    """Scenario numbers to run: 6 means 1 and 3 (where it lives)."""
    out: list[int] = []
    for n in wanted or sorted({*DEFAULT_SCENARIOS, 6}):
        for k in SCENARIO_6_IN if n == 6 else (n,):
            if k not in SCENARIOS:
                raise ValueError(f"no scenario {n} (1-7, 11, 13-16, 20, 21)")
            if k not in out:
                out.append(k)
    return sorted(out)
