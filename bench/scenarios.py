"""Issue 7's scenarios 1-3 (6 runs inside 1 and 3) and the registry of every numbered one.

Scenarios 4 and 5 are in `bench/limits.py`, 7 in `bench/webhook_load.py`, 20 and 21 in
`bench/senders.py`; issue 14's in `bench/round2.py` and `bench/bigtable.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from bench.context import (
    BACKENDS,
    BATCH,
    CONCURRENCY,
    LATENCY_MEAN_S,
    RATE,
    Bench,
    lognormal_latency,
    lossless,
    utc_now,
)
from bench.harness import (
    digits,
    enroll,
    running_fake,
)
from bench.limits import scenario_4, scenario_5
from bench.measure import Row, bound
from bench.senders import SENDER_SCENARIOS
from bench.webhook_load import scenario_7
from dripline.planner import Arrivals, PlanSettings, simulate
from dripline.settings import Policy


# ---------------------------------------------------------------- scenario 1 (+6)
async def scenario_1(b: Bench) -> None:
    n = b.sizes.backlog
    results: dict[str, Row] = {}
    async with running_fake(b.workdir, rate_per_s=RATE) as fake:
        for backend in BACKENDS:
            url = await b.dbs.fresh(backend, "s1")
            due = utc_now()
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
                lossless(row),
            )
        # The planner's prediction for the PostgreSQL run.
        sim = simulate(
            PlanSettings(
                policy=Policy.STATIC, batch_limit=BATCH, concurrency=CONCURRENCY, rate_per_s=RATE
            ),
            lognormal_latency(),
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
        due = utc_now()
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
            due = utc_now() - timedelta(seconds=1)
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
            due = utc_now()
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
                lossless(row),
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
            due = _steady_due(utc_now() + timedelta(seconds=lead), dur, rate)
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
                lossless(row),
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
            due = _steady_due(utc_now() + timedelta(seconds=pq_lead), dur, rate)
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
