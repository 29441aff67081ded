"""Several sender numbers (issue 15 item 6, issue 14 item 6).

20: two numbers with different limits (300/s and 700/s) drain one mixed backlog, each
    reported against its own limit. The fake limits each number separately
    (`--number-rate`), dripline is told each number's rate (`DRIPLINE_SENDERS`).
21: 4 numbers x 500/s, 2 `dripline run` workers, one PostgreSQL: the aggregate against
    2,000/s, CPU per message of the dispatchers and of PostgreSQL.

Numbered 20+ so the single-number scenarios (1-19) keep their numbers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psutil

from bench.harness import PHONE_NUMBER_ID, Fake, digits, phone, running_fake
from bench.measure import Row, from_record
from bench.predict import calibration_of, predict
from dripline.planner import Arrivals, LatencyModel, PlanSettings
from dripline.settings import Policy
from dripline.store import Enrollment, open_store

if TYPE_CHECKING:
    from bench.context import Bench, RunResult

__all__ = ["SENDER_SCENARIOS"]

LATENCY_MEAN_S = 0.150
LATENCY_P99_S = 0.600  # the fake's defaults (bench/harness.py running_fake)
CONTROL = "100000000000099"  # the control runs' one number


def fake_cpu_s(fake: Fake) -> float:
    """The fake's CPU seconds so far (it serves several runs: take differences)."""
    t = psutil.Process(fake.child.pid).cpu_times()
    return float(t.user + t.system)


def load_note() -> str:
    """The machine's load average: it is shared, and the figures depend on it."""
    one, five, _ = os.getloadavg()
    return f"load avg {one:.1f}/{five:.1f} (1/5 min) on {os.cpu_count()} cores"


def annotate(row: Row, fake_before: float, fake: Fake) -> None:
    """The fake's CPU per message and the machine's load, on the run's row."""
    used = fake_cpu_s(fake) - fake_before
    row.extra["fake_cpu_ms_per_msg"] = round(used * 1000 / max(1, row.messages), 3)
    row.notes += f" fake CPU {row.extra['fake_cpu_ms_per_msg']} ms/msg; {load_note()}"


def numbers(count: int) -> list[str]:
    """Phone number ids: the default first, then 100000000000002, ..."""
    return [PHONE_NUMBER_ID] + [f"1000000000000{i + 2:02d}" for i in range(count - 1)]


def interleave(rates: Sequence[float], n: int) -> list[int]:
    """For each of n conversations, the index of its number: a mix in proportion to the
    rates (smooth weighted round robin), so every number has work until the end."""
    credit = [0.0] * len(rates)
    total = sum(rates)
    out: list[int] = []
    for _ in range(n):
        for k, r in enumerate(rates):
            credit[k] += r
        k = max(range(len(rates)), key=lambda j: credit[j])
        credit[k] -= total
        out.append(k)
    return out


async def enroll_on(url: str, due: datetime, senders: Sequence[str | None]) -> None:
    """Conversation i (phone(i), demo flow, due `due`) on number senders[i] (None: the
    default), as the API stores them."""
    store = await open_store(url, pool_size=1)
    try:
        now = datetime.now(UTC)
        for lo in range(0, len(senders), 2_000):
            items = [
                Enrollment(phone=phone(i), flow="demo", at=due, sender=senders[i])
                for i in range(lo, min(len(senders), lo + 2_000))
            ]
            await store.enroll(items, now)
    finally:
        await store.close()


def per_number_rows(
    scenario: str,
    received: Sequence[dict[str, object]],
    due_by_to: dict[str, float],
    owner: dict[str, str],
    rates: dict[str, float],
    backend: str,
) -> list[Row]:
    """One row per number: its own messages, against its own limit."""
    rows = []
    for k, (number, rate) in enumerate(rates.items()):
        mine = {to: due for to, due in due_by_to.items() if owner[to] == number}
        got = [m for m in received if str(m.get("phone_number_id")) == number]
        wrong = [
            m for m in received if str(m["to"]) in mine and str(m.get("phone_number_id")) != number
        ]
        row = Row(
            scenario=scenario,
            run=f"number {chr(65 + k)} ({number[-2:]}) alone: limit {rate:g}/s",
            system="dripline, one number",  # a part of the run above, not a run
            backend=backend,
        )
        from_record(row, got, mine, {}, bound_per_s=rate)
        row.throttled_130429 = None  # the fake counts 130429 for all numbers together
        row.attempts = None
        if wrong:
            row.notes += f" {len(wrong)} sent from another number"
        row.extra["sent_from_wrong_number"] = len(wrong)
        rows.append(row)
    return rows


async def scenario_20(b: Bench) -> None:
    from bench.context import lossless, utc_now

    n = b.sizes.backlog
    ids = numbers(2)
    rates = dict(zip(ids, (300.0, 700.0), strict=True))
    senders_env = ",".join(f"{i}:{r:g}" for i, r in rates.items())
    fake_args = [a for i, r in rates.items() for a in ("--number-rate", f"{i}={r:g}")]
    total = sum(rates.values())
    # The default number's bucket is 300/s for the two-number runs; the control run sends
    # the same backlog from one number at the sum of the rates (fake --rate 1000).
    fake_args += ["--number-rate", f"{CONTROL}={total:g}"]
    async with running_fake(b.workdir, rate_per_s=80.0, extra_args=fake_args) as fake:
        for backend in ("sqlite", "postgres"):
            ctrl = None
            if not b.quick:  # a smoke run checks the code, not the machine
                ctrl = await control_run(b, fake, "20", backend, n, total, workers=1)
            url = await b.dbs.fresh(backend, "s20")
            due = utc_now()
            which = interleave(list(rates.values()), n)
            owner = {digits(i): ids[k] for i, k in enumerate(which)}
            await enroll_on(url, due, [None if k == 0 else ids[k] for k in which])
            due_by_to = {digits(i): due.timestamp() for i in range(n)}
            before = fake_cpu_s(fake)
            res = await b.run_dripline(
                scenario="20",
                run=f"2 numbers (300/s + 700/s), mixed backlog {n:,}",
                backend=backend,
                url=url,
                fake=fake,
                due_by_to=due_by_to,
                rate=rates[ids[0]],
                timeout_s=max(60.0, n / 100),
                bound_per_s=sum(rates.values()),
                extra_env={"DRIPLINE_SENDERS": senders_env},
            )
            annotate(res.row, before, fake)
            received = await fake.messages()
            for row in per_number_rows("20", received, due_by_to, owner, rates, backend):
                b.add(row)
                b.check(
                    "20",
                    f"{backend}: {row.run}: >= 0.95 of its limit",
                    f"{row.ratio_to_bound}",
                    (row.ratio_to_bound or 0) >= 0.95,
                )
            agg = res.row
            b.check(
                "20",
                f"{backend}: no 130429, 0 duplicates, 0 missing",
                f"{agg.throttled_130429} / {agg.duplicates} / {agg.missing}",
                agg.throttled_130429 == 0 and lossless(agg),
            )
            # One limiter at the sum of the numbers' rates: the backlog is mixed in
            # proportion to them, so the numbers' buckets drain together.
            cross_predict(
                b, "20", backend, res, ctrl, n, rate=total, concurrency=300, batch=1000, workers=1
            )


async def scenario_21(b: Bench) -> None:
    from bench.context import lossless, utc_now

    n = b.sizes.backlog * 2
    ids = numbers(4)
    rates = dict.fromkeys(ids, 500.0)
    senders_env = ",".join(f"{i}:{r:g}" for i, r in rates.items())
    fake_args = [a for i, r in rates.items() for a in ("--number-rate", f"{i}={r:g}")]
    concurrency = 300  # per worker: 600 in flight >> 2,000/s x 150 ms, so the rates bind
    fake_args += ["--number-rate", f"{CONTROL}=2000"]
    async with running_fake(b.workdir, rate_per_s=80.0, extra_args=fake_args) as fake:
        ctrl = None
        if not b.quick:
            ctrl = await control_run(b, fake, "21", "postgres", n, 2000.0, workers=2)
        url = await b.dbs.fresh("postgres", "s21")
        due = utc_now()
        which = interleave(list(rates.values()), n)
        owner = {digits(i): ids[k] for i, k in enumerate(which)}
        await enroll_on(url, due, [None if k == 0 else ids[k] for k in which])
        due_by_to = {digits(i): due.timestamp() for i in range(n)}
        before = fake_cpu_s(fake)
        res = await b.run_dripline(
            scenario="21",
            run=f"4 numbers x 500/s, 2 workers x {concurrency}, backlog {n:,}",
            backend="postgres",
            url=url,
            fake=fake,
            due_by_to=due_by_to,
            workers=2,
            rate=500.0,
            concurrency=concurrency,
            batch=2_000,
            timeout_s=max(60.0, n / 200),
            bound_per_s=sum(rates.values()),
            extra_env={"DRIPLINE_SENDERS": senders_env},
        )
        agg = res.row
        annotate(agg, before, fake)
        received = await fake.messages()
        for row in per_number_rows("21", received, due_by_to, owner, rates, "postgres"):
            b.add(row)
        b.check(
            "21",
            "aggregate >= 0.95 of 2,000/s",
            f"{agg.throughput_per_s} ({agg.ratio_to_bound})",
            (agg.ratio_to_bound or 0) >= 0.95,
        )
        b.check(
            "21",
            "no 130429, 0 duplicates, 0 missing",
            f"{agg.throttled_130429} / {agg.duplicates} / {agg.missing}",
            agg.throttled_130429 == 0 and lossless(agg),
        )
        cross_predict(
            b, "21", "postgres", res, ctrl, n, rate=2000.0, concurrency=600, batch=2000, workers=2
        )
        b.extra["s21_cpu_ms_per_msg"] = {
            "dispatchers": agg.cpu_ms_per_msg,
            "dispatchers_net": agg.cpu_ms_per_msg_net,
            "postgres": agg.pg_cpu_ms_per_msg,
            "fake": agg.extra.get("fake_cpu_ms_per_msg"),
        }


def cross_predict(
    b: Bench,
    scenario: str,
    backend: str,
    res: RunResult,
    ctrl: RunResult | None,
    n: int,
    *,
    rate: float,
    concurrency: int,
    batch: int,
    workers: int,
) -> None:
    """The planner's prediction of the several-number run, fed the control run's CPU
    per message, and of the control, fed the several-number run's: each from the other
    run at the same aggregate rate (no control in a quick run: no CPU term)."""
    settings = PlanSettings(
        policy=Policy.STATIC, batch_limit=batch, concurrency=concurrency, rate_per_s=rate
    )
    latency = LatencyModel.lognormal(LATENCY_MEAN_S, LATENCY_P99_S)
    pairs = [(res, ctrl, "the control run (1 number, same aggregate rate, just before)")]
    if ctrl is not None:
        pairs.append((ctrl, res, "the several-number run (same aggregate rate, just after)"))
    for measured, other, source in pairs:
        what = f"the {backend} " + ("control" if measured is ctrl else "run with several numbers")
        predict(
            b,
            scenario=scenario,
            what=what,
            measured=measured,
            settings=settings,
            latency=latency,
            arrivals=Arrivals.backlog(n),
            cal=calibration_of(other, source) if other is not None else None,
            workers=workers,
            postgres=backend == "postgres",
        )


async def control_run(
    b: Bench, fake: Fake, scenario: str, backend: str, n: int, rate: float, *, workers: int
) -> RunResult:
    """The same backlog from one number at the sum of the rates, in the same run on the
    same (shared) machine: what the machine allows at this aggregate, with or without
    several numbers."""
    from bench.context import utc_now

    url = await b.dbs.fresh(backend, f"s{scenario}c")
    due = utc_now()
    await enroll_on(url, due, [None] * n)
    before = fake_cpu_s(fake)
    res = await b.run_dripline(
        scenario=scenario,
        run=f"control: 1 number at {rate:g}/s, {workers} worker(s), backlog {n:,}",
        backend=backend,
        url=url,
        fake=fake,
        due_by_to={digits(i): due.timestamp() for i in range(n)},
        workers=workers,
        rate=rate,
        concurrency=300,
        batch=2_000,
        timeout_s=max(60.0, n / 100),
        bound_per_s=rate,
        extra_env={"DRIPLINE_WHATSAPP_PHONE_NUMBER_ID": CONTROL},
    )
    annotate(res.row, before, fake)
    return res


SENDER_SCENARIOS = {20: scenario_20, 21: scenario_21}
