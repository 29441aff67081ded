"""Issue 14's scenarios (performance, round two), numbered 10 + the issue's item:

- 11 concurrency-bound: in-flight limit exactly rate x latency; goal >= 0.95 of the bound;
- 13 trickle: steady arrival at 1, 10 and 33 msg/s, then an idle minute (CPU per message,
  idle CPU, lag);
- 14 start-up: process start to first send of `dripline run --once`, goal < 0.5 s;
- 15 long drain: N conversations due at once (BENCH_DRAIN_N, default 1,000,000), the
  send rate per 10 s, the last 10% within 10% of the first 10%.

Each prints its ratio to the bound or goal (a `Check`) and, where the planner can model
the run, the planner's prediction next to it (goal: within 5%), fed CPU per message
from another run (`bench/predict.py` says what is fed in and from where).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from bench import bulk
from bench.context import Bench, RunResult, utc_now
from bench.harness import DRIPLINE, digits, enroll, running_fake, settle, spawn
from bench.measure import Row, bound
from bench.predict import calibration_of, predict, seen_latency_s
from bench.windows import WindowCpu, read_at, window_usage
from dripline.planner import Arrivals, LatencyModel, PlanSettings
from dripline.settings import Policy
from dripline.store import open_store

__all__ = ["SCENARIOS"]

BACKENDS = ("sqlite", "postgres")


def _calibration(res: RunResult, what: str) -> None:
    """Mark a run made only to measure CPU per message for the planner."""
    res.row.system = "dripline (calibration)"
    res.row.run = f"calibration for the planner: {res.row.run}"
    res.row.notes += f" CPU per message fed to the planner's prediction of {what}"


# ------------------------------------------------------------ 11 concurrency-bound
async def scenario_11(b: Bench) -> None:
    """5,000 due at once, fixed 100 ms latency, 100 in flight, 1,000/s: both limits
    give 1,000/s, so any time a slot spends on something other than its call shows."""
    n = 500 if b.quick else 5_000
    rate, latency_s, slots = 1000.0, 0.100, 100
    the_bound = bound(rate, slots, latency_s)
    async with running_fake(
        b.workdir, rate_per_s=rate * 1.1, latency_ms=latency_s * 1000, latency_p99_ms=None
    ) as fake:
        runs = [(backend, 1) for backend in BACKENDS] + [("postgres", 2)]
        n_cal = 300 if b.quick else 2_000
        for backend, workers in runs:
            what = f"the {backend} run" + (f" with {workers} workers" if workers > 1 else "")

            async def one(count: int, backend: str = backend, workers: int = workers) -> RunResult:
                url = await b.dbs.fresh(backend, f"s11{workers}")
                due = utc_now()
                await enroll(url, [due] * count)
                return await b.run_dripline(
                    scenario="11",
                    run=f"concurrency-bound: {count:,} due, {slots} in flight x "
                    f"{latency_s * 1000:g} ms, {rate:g}/s"
                    + (f", {workers} workers" if workers > 1 else ""),
                    backend=backend,
                    url=url,
                    fake=fake,
                    due_by_to={digits(i): due.timestamp() for i in range(count)},
                    workers=workers,
                    rate=rate,
                    concurrency=slots // workers,
                    timeout_s=max(60.0, count / 100),
                    bound_per_s=the_bound,
                )

            # The planner's CPU inputs come from this shorter run of the same
            # configuration, not from the run it predicts.
            cal = await one(n_cal)
            _calibration(cal, what)
            res = await one(n)
            row = res.row
            # The calls' own time as the workers saw it: on a loaded machine the fake
            # answers late, so slots / that latency is what the slots could carry; the
            # ratio to it shows whether they were kept busy.
            seen_s = seen_latency_s(res)
            if seen_s and row.throughput_per_s:
                by_slots = min(rate, slots / seen_s)
                row.extra["latency_p50_ms"] = round(seen_s * 1000, 1)
                row.extra["ratio_to_seen_bound"] = round(row.throughput_per_s / by_slots, 3)
                row.notes += (
                    f"call latency p50 {seen_s * 1000:.0f} ms: {by_slots:.0f}/s by the slots, "
                    f"{row.throughput_per_s / by_slots:.2f} of it"
                )
            # Each worker's own account (`dripline run --json`, "slots"): how busy its
            # slots were over its sending, the pipeline's dry waits, the join wait.
            own = [s["slots"] for s in res.summaries if isinstance(s, dict) and "slots" in s]
            if own:
                row.extra["workers_slots"] = own
                row.notes += "; per worker: " + ", ".join(
                    f"busy {o['busy']} over {o['span_s']} s, dry {o['dry']}x {o['dry_s']} s, "
                    f"joined after {o['join_wait_s']} s"
                    for o in own
                )
            b.check(
                "11",
                f"{backend} x{workers}: >= 0.95 of the bound ({the_bound:.0f}/s)",
                f"{row.throughput_per_s} msg/s = {row.ratio_to_bound}",
                (row.ratio_to_bound or 0) >= 0.95,
            )
            predict(
                b,
                scenario="11",
                what=what,
                measured=res,
                settings=PlanSettings(
                    policy=Policy.STATIC, batch_limit=1000, concurrency=slots, rate_per_s=rate
                ),
                # What a call really takes here (the fake's loop, loopback, HTTP) is a
                # property of the stack, measured like CPU by the calibration run: the
                # nominal 100 ms predicted 1,000/s where 0.94-0.95 was measured.
                latency=LatencyModel.constant(seen_latency_s(cal) or latency_s),
                arrivals=Arrivals.backlog(n),
                cal=calibration_of(
                    cal, f"a calibration run just before (same configuration, {n_cal:,} due)"
                ),
                workers=workers,
                postgres=backend == "postgres",
            )
        due = utc_now() - timedelta(seconds=1)
        pq = await b.run_procrastinate(
            scenario="11",
            fake=fake,
            jobs=[(i, due) for i in range(n)],
            poll_s=0.5,
            timeout_s=max(90.0, n / 50),
            concurrency_total=slots,
        )
        pq.bound_per_s = round(the_bound, 1)
        if pq.throughput_per_s:
            pq.ratio_to_bound = round(pq.throughput_per_s / the_bound, 3)


# ------------------------------------------------------------ 13 trickle
TRICKLE_RATES = (1.0, 10.0, 33.0)
TRICKLE_CPU_GOAL_MS = 1.5  # per message, at 10 and 33 msg/s
IDLE_GOAL = 0.005  # of one core
TRICKLE_LAG_GOAL_MS = 20.0
# Which other rate's run feeds the planner its CPU per message for each rate.
TRICKLE_CAL_FROM = {1.0: 33.0, 10.0: 33.0, 33.0: 10.0}


# The window of a trickle's sends: from just before the first is due (its claim) to
# past the last one's reply and record (the fake's latency tail is 600 ms).
WINDOW_BEFORE_S = 0.5
# From t0's choice to the first send: enrolment, the harness's CHECKPOINT and machine
# sample (1 s), then the process's start-up (2-3 s of wall time at a load of 10), all
# before the window opens (`cpu_before_s` in the row's window_cpu shows it did).
TRICKLE_LEAD_S = 8.0
WINDOW_AFTER_S = 1.5
# The idle minute starts this long after the process: its start-up falls before it.
IDLE_SETTLE_S = 5.0


async def _idle_cpu(b: Bench, backend: str, seconds: float) -> tuple[WindowCpu | None, float]:
    """A dispatcher's share of one core while nothing is due: read over `seconds` of
    the process's own life after IDLE_SETTLE_S (`bench/windows.py`), and the old
    figure, its whole run's CPU net of a separate start-up run."""
    url = await b.dbs.fresh(backend, "s13idle")
    base = await b.baseline(backend)
    await settle(backend)
    child = spawn(
        "idle",
        [DRIPLINE, "run", "--max-seconds", str(IDLE_SETTLE_S + seconds + 5)],
        b.dripline_env(url, None, DRIPLINE_WHATSAPP_BASE_URL="http://127.0.0.1:9"),
        b.workdir,
    )
    start = time.time() + IDLE_SETTLE_S
    readings = await read_at(child.pid, [start, start + seconds])
    child.terminate()
    usage = await child.wait(60)
    alive = usage.cpu_s  # start-up, the window and the shutdown
    net = max(0.0, alive - base) / seconds
    if len(readings) != 2:
        return None, net
    (t0, c0, _), (t1, c1, _) = readings
    return window_usage((t0, c0), (t1, c1), 0), net


async def scenario_13(b: Bench) -> None:
    """Steady arrival, one message every 1/rate s for a minute, at 1, 10 and 33 msg/s;
    then a minute with nothing due. CPU per message and the idle share are read inside
    their own windows (`bench/windows.py`); the gross figure (the whole process) stays."""
    dur = 10.0 if b.quick else 60.0
    lead = 5.0  # procrastinate's
    async with running_fake(b.workdir, rate_per_s=1000.0) as fake:
        for backend in BACKENDS:
            done: dict[float, RunResult] = {}
            for rate in TRICKLE_RATES:
                url = await b.dbs.fresh(backend, f"s13{int(rate)}")
                t0 = utc_now() + timedelta(seconds=TRICKLE_LEAD_S)
                due = [t0 + timedelta(seconds=i / rate) for i in range(int(dur * rate))]
                await enroll(url, due)
                first, last = due[0].timestamp(), due[-1].timestamp()
                res = await b.run_dripline(
                    scenario="13",
                    run=f"trickle {rate:g}/s for {dur:g} s",
                    backend=backend,
                    url=url,
                    fake=fake,
                    due_by_to={digits(i): d.timestamp() for i, d in enumerate(due)},
                    timeout_s=TRICKLE_LEAD_S + dur + 30,
                    bound_per_s=rate,
                    window=(first - WINDOW_BEFORE_S, last + WINDOW_AFTER_S),
                )
                done[rate] = res
                row = res.row
                net = _window_net(row, res.window)
                if rate >= 10:
                    pg = row.pg_cpu_ms_per_msg or 0
                    b.check(
                        "13",
                        f"{backend} {rate:g}/s: <= {TRICKLE_CPU_GOAL_MS} ms CPU/msg",
                        f"{net} ms in the sends' window (+{pg} PG; gross "
                        f"{row.cpu_ms_per_msg}) = "
                        f"{round((net or 0) / TRICKLE_CPU_GOAL_MS, 2)} of the goal",
                        net is not None and net <= TRICKLE_CPU_GOAL_MS,
                    )
                b.check(
                    "13",
                    f"{backend} {rate:g}/s: lag p99 < {TRICKLE_LAG_GOAL_MS:g} ms",
                    f"{row.lag_p99_ms} ms = "
                    f"{round((row.lag_p99_ms or 0) / TRICKLE_LAG_GOAL_MS, 2)} of the goal",
                    (row.lag_p99_ms or 1e9) < TRICKLE_LAG_GOAL_MS,
                )
            # The planner: arrivals at a trickle, the CPU per message of the same
            # backend's run at another rate (a trickle's cost per message depends on the
            # rate, but at these rates the CPU is far from binding either way).
            for rate, res in done.items():
                other = TRICKLE_CAL_FROM[rate]
                predict(
                    b,
                    scenario="13",
                    what=f"the {backend} trickle at {rate:g}/s",
                    measured=res,
                    settings=PlanSettings(
                        policy=Policy.STATIC, batch_limit=1000, concurrency=300, rate_per_s=1000.0
                    ),
                    latency=LatencyModel.lognormal(0.150, 0.600),
                    arrivals=[i / rate for i in range(int(dur * rate))],
                    cal=calibration_of(done[other], f"the {backend} trickle at {other:g}/s"),
                    postgres=backend == "postgres",
                )
            window, old = await _idle_cpu(b, backend, dur)
            idle = window.core_share if window is not None else None
            shown = "not read" if idle is None else f"{idle:.4%}"
            b.add(
                Row(
                    scenario="13",
                    run=f"idle {dur:g} s: share of one core",
                    system="dripline",
                    backend=backend,
                    wall_s=dur,
                    notes=f"{shown} of a core over the idle minute itself "
                    f"(the old figure, the run net of a start-up run: {old:.4%})",
                    extra={
                        "idle_core_share": None if idle is None else round(idle, 5),
                        "idle_core_share_net_of_startup": round(old, 5),
                    },
                )
            )
            b.check(
                "13",
                f"{backend} idle: < {IDLE_GOAL:.1%} of a core",
                f"{shown} = {round((idle or 0) / IDLE_GOAL, 2)} of the goal "
                f"(net of a start-up run: {old:.3%})",
                idle is not None and idle < IDLE_GOAL,
            )
        rate = TRICKLE_RATES[-1]
        t0 = utc_now() + timedelta(seconds=lead + 5)
        due = [t0 + timedelta(seconds=i / rate) for i in range(int(dur * rate))]
        pq = await b.run_procrastinate(
            scenario="13",
            fake=fake,
            jobs=list(enumerate(due)),
            poll_s=0.5,
            timeout_s=lead + dur + 40,
        )
        pq.bound_per_s = rate
        pq.ratio_to_bound = None


def _window_net(row: Row, window: WindowCpu | None) -> float | None:
    """The trickle's CPU per message read inside its sends' window; the row's `net`
    becomes that figure (the old one, net of a start-up run, stays in `extra`)."""
    row.extra["cpu_ms_per_msg_net_of_startup"] = row.cpu_ms_per_msg_net
    ms = window.ms_per_message if window is not None else None
    row.cpu_ms_per_msg_net = None if ms is None else round(ms, 3)
    row.notes += " CPU/msg (net): read inside the sends' window, start-up excluded."
    return row.cpu_ms_per_msg_net


# ------------------------------------------------------------ 14 start-up
async def scenario_14(b: Bench) -> None:
    """Process start to the first send of `dripline run --once` (cron pays it each run):
    one message due, the fake's latency 0, the time from spawn to its arrival."""
    tries = 2 if b.quick else 5
    async with running_fake(
        b.workdir, rate_per_s=1000.0, latency_ms=0.0, latency_p99_ms=None
    ) as fake:
        for backend in BACKENDS:
            samples = []
            for k in range(tries):
                url = await b.dbs.fresh(backend, f"s14{k}")
                await enroll(url, [utc_now() - timedelta(seconds=1)])
                await fake.reset()
                await settle(backend)
                started = time.time()
                child = spawn(
                    "once",
                    [DRIPLINE, "run", "--once"],
                    b.dripline_env(url, fake),
                    b.workdir,
                )
                await child.wait(60)
                received = await fake.messages()
                arrivals = [float(m.get("arrived_wall") or m["received_wall"]) for m in received]
                if arrivals:
                    samples.append(min(arrivals) - started)
            samples.sort()
            median = samples[len(samples) // 2] if samples else None
            row = b.add(
                Row(
                    scenario="14",
                    run=f"start-up: spawn to first send, run --once (median of {tries})",
                    system="dripline",
                    backend=backend,
                    messages=len(samples),
                    wall_s=round(median, 3) if median is not None else None,
                    notes="samples " + ", ".join(f"{s:.3f}" for s in samples) + " s",
                )
            )
            b.check(
                "14",
                f"{backend}: first send < 0.5 s after start",
                f"{row.wall_s} s = {round((median or 9) / 0.5, 2)} of the goal",
                median is not None and median < 0.5,
            )


# ------------------------------------------------------------ 15 long drain
DRAIN_N = int(os.environ.get("BENCH_DRAIN_N", "1000000"))  # issue 14: 1,000,000 per backend
DRAIN_DECAY_GOAL = 0.10  # the last 10% within 10% of the first 10%
# `BENCH_DRAIN_BACKENDS=postgres`: one backend only (a long drain on each takes a while).
DRAIN_BACKENDS = tuple(
    b for b in os.environ.get("BENCH_DRAIN_BACKENDS", ",".join(BACKENDS)).split(",") if b
)


def _rate_between(times: list[float], lo: int, hi: int) -> float:
    span = times[hi - 1] - times[lo]
    return (hi - lo - 1) / span if span > 0 else 0.0


async def scenario_15(b: Bench) -> None:
    """N conversations due at once, limit 2,000/s, 100 in flight, 20 ms latency: the
    dispatcher's CPU binds, so a cost that grows with the run shows as a falling rate."""
    n = 5_000 if b.quick else DRAIN_N
    rate, slots, latency_s = 2000.0, 100, 0.020
    async with running_fake(
        b.workdir, rate_per_s=rate * 1.1, latency_ms=latency_s * 1000, latency_p99_ms=None
    ) as fake:
        for backend in DRAIN_BACKENDS:

            async def drain(count: int, tag: str, backend: str = backend) -> RunResult:
                url = await b.dbs.fresh(backend, tag)
                if backend == "sqlite":
                    store = await open_store(url, pool_size=1)  # creates the schema
                    await store.close()
                b.progress.note(f"15 {backend}: loading {count:,} due conversations")
                await bulk.load_conversations(url, count, count, 0)
                due_at = utc_now().timestamp() - 1.0
                return await b.run_dripline(
                    scenario="15",
                    run=f"drain {count:,} due, {slots} in flight x {latency_s * 1000:g} ms, "
                    f"{rate:g}/s",
                    backend=backend,
                    url=url,
                    fake=fake,
                    due_by_to={digits(i): due_at for i in range(1, count + 1)},
                    rate=rate,
                    concurrency=slots,
                    timeout_s=max(120.0, count / 250),
                    bound_per_s=bound(rate, slots, latency_s),
                )

            # The planner's CPU inputs: a shorter drain of the same configuration first.
            n_cal = 1_000 if b.quick else min(20_000, max(2_000, n // 10))
            cal = await drain(n_cal, "s15cal")
            _calibration(cal, f"the {backend} drain")
            res = await drain(n, "s15")
            predict(
                b,
                scenario="15",
                what=f"the {backend} drain",
                measured=res,
                settings=PlanSettings(
                    policy=Policy.STATIC, batch_limit=1000, concurrency=slots, rate_per_s=rate
                ),
                # What a call really takes here (the fake's loop, loopback, HTTP) is a
                # property of the stack, measured like CPU by the calibration run: the
                # nominal 100 ms predicted 1,000/s where 0.94-0.95 was measured.
                latency=LatencyModel.constant(seen_latency_s(cal) or latency_s),
                arrivals=Arrivals.backlog(n),
                cal=calibration_of(
                    cal, f"a calibration drain just before (same configuration, {n_cal:,} due)"
                ),
                postgres=backend == "postgres",
            )
            row = res.row
            per_10s = []
            start = res.history[0]
            for i in range(1, len(res.history)):
                t, _, accepted, _ = res.history[i]
                if t - start[0] >= 10.0 or i == len(res.history) - 1:
                    per_10s.append(round((accepted - start[2]) / max(t - start[0], 1e-9)))
                    start = res.history[i]
            row.extra["rate_per_10s"] = per_10s
            # Each recipient's first message: the drain, not the flow's later steps that
            # fall due during a long one.
            first_at: dict[str, float] = {}
            for m in await fake.messages():
                t = float(m.get("arrived_wall") or m["received_wall"])
                first_at[str(m["to"])] = min(t, first_at.get(str(m["to"]), t))
            times = sorted(first_at.values())
            tenth = len(times) // 10
            if tenth < 2:
                continue
            first = _rate_between(times, 0, tenth)
            last = _rate_between(times, len(times) - tenth, len(times))
            decay = 1.0 - last / first if first else 1.0
            row.extra["first_10pct_per_s"] = round(first)
            row.extra["last_10pct_per_s"] = round(last)
            row.notes += f"first 10% {first:.0f}/s, last 10% {last:.0f}/s; per 10 s: " + ", ".join(
                str(r) for r in per_10s
            )
            b.check(
                "15",
                f"{backend}: last 10% within 10% of the first 10% ({n:,})",
                f"{first:.0f} -> {last:.0f} msg/s ({-decay:+.1%}; "
                f"{round(max(decay, 0.0) / DRAIN_DECAY_GOAL, 2)} of the allowed decay)",
                decay <= DRAIN_DECAY_GOAL,
            )


SCENARIOS: dict[int, Callable[[Bench], Awaitable[None]]] = {
    11: scenario_11,
    13: scenario_13,
    14: scenario_14,
    15: scenario_15,
}
