"""Scenario 16 (issue 14, item 5, second half): a big table on PostgreSQL.

`BENCH_BIG_N` conversations (default 10,000,000), bulk-loaded in the proportions of
scenario 5 (1% due now, 19% waiting for tomorrow, 80% completed), with an answered
question in `messages` for half of them (the history an installation keeps, sent over
30 days). Then:

- the claim: timed `claim_due(100)` calls through the store (goal: p99 < 3 ms);
- `dripline status --json` as an operator runs it, spawn to exit (goal: < 1 s), and the
  store's part of it in process (`gather_status`), so start-up and queries are apart;
- a dispatcher sending the due rows with its RSS sampled (goal: flat).

Run only when named (`python -m bench --scenario 16`): the load alone takes minutes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from bench import bulk
from bench.context import Bench
from bench.harness import DRIPLINE, digits, running_fake
from bench.limits import rss_while_sending
from bench.measure import Row, pct

__all__ = ["SCENARIOS"]

BIG_N = int(os.environ.get("BENCH_BIG_N", "10000000"))
CLAIM_P99_GOAL_MS = 3.0
STATUS_GOAL_S = 1.0
STATUS_RUNS = 5


async def _status_in_process(url: str, runs: int) -> list[float]:
    """Seconds per `gather_status` on one open store: the database's share of the CLI."""
    from dripline.status_report import gather_status
    from dripline.store import open_store

    store = await open_store(url, pool_size=1)
    try:
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            await gather_status(store)
            out.append(time.perf_counter() - t0)
        return sorted(out)
    finally:
        await store.close()


async def _status_cli(b: Bench, url: str, runs: int) -> list[float]:
    """Seconds from spawning `dripline status --json` to its exit (waited for in a thread,
    not polled, so the figure has no polling step in it)."""
    env = b.dripline_env(url, None)
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run, [DRIPLINE, "status", "--json"], env=env, capture_output=True
        )
        out.append(time.perf_counter() - started)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"dripline status exited {done.returncode}: {tail}")
    return sorted(out)


def _fmt(xs: list[float], unit: str, scale: float = 1.0) -> str:
    return ", ".join(f"{x * scale:.2f}" for x in xs) + f" {unit}"


async def scenario_16(b: Bench) -> None:
    n = 50_000 if b.quick else BIG_N
    due = 200 if b.quick else 10_000
    later = n * 19 // 100
    history = n // 2
    samples = b.sizes.claim_samples
    async with running_fake(b.workdir, rate_per_s=1000.0) as fake:
        url = await b.dbs.fresh("postgres", "s16")
        b.progress.note(f"16: loading {n:,} conversations and {history:,} messages")
        load_s = await bulk.load_conversations(url, n, due, later)
        load_s += await bulk.load_history_pg(url, due + later + 1, history)
        plan = await bulk.explain_claim(url, 100)
        claims = await bulk.claim_timings(url, samples)
        in_process = await _status_in_process(url, STATUS_RUNS)
        cli = await _status_cli(b, url, STATUS_RUNS)
        due_at = datetime.now(UTC) - timedelta(seconds=1)
        res = await b.run_dripline(
            scenario="16",
            run=f"{n:,} conversations, {due:,} due, {history:,} messages",
            backend="postgres",
            url=url,
            fake=fake,
            due_by_to={digits(i): due_at.timestamp() for i in range(1, due + 1)},
            timeout_s=max(60.0, due / 100),
        )
    row = res.row
    rss = [mb for _, mb in res.children[0].rss_samples]
    quarter, last = rss_while_sending(res)
    p50, p99 = pct(claims, 0.5), pct(claims, 0.99)
    status_median = cli[len(cli) // 2]
    row.extra.update(
        load_s=round(load_s, 1),
        claim_ms_p50=round(p50, 2),
        claim_ms_p99=round(p99, 2),
        claim_ms_max=round(claims[-1], 2),
        claims=len(claims),
        plan=plan,
        status_cli_s=[round(x, 3) for x in cli],
        status_queries_s=[round(x, 3) for x in in_process],
        rss_mb_samples=[round(x, 1) for x in rss],
    )
    row.notes = (
        f"claim of 100: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(claims)}; "
        f"`dripline status --json` {_fmt(cli, 's')} (queries alone {_fmt(in_process, 's')}); "
        f"RSS {quarter:.0f} -> {last:.0f} MB (a quarter of the sending -> end); load {load_s:.0f} s"
    )
    b.add(
        Row(
            scenario="16",
            run=f"`dripline status --json`, spawn to exit, median of {STATUS_RUNS}",
            system="dripline",
            backend="postgres",
            wall_s=round(status_median, 3),
            notes=f"samples {_fmt(cli, 's')}; gather_status alone {_fmt(in_process, 's')}",
        )
    )
    b.check(
        "16",
        f"postgres {n:,}: claim p99 < {CLAIM_P99_GOAL_MS:g} ms",
        f"{p99:.2f} ms = {p99 / CLAIM_P99_GOAL_MS:.2f} of the goal",
        p99 < CLAIM_P99_GOAL_MS,
    )
    b.check(
        "16",
        f"postgres {n:,}: dripline status < {STATUS_GOAL_S:g} s",
        f"{status_median:.2f} s = {status_median / STATUS_GOAL_S:.2f} of the goal",
        status_median < STATUS_GOAL_S,
    )
    b.check(
        "16",
        f"postgres {n:,}: dispatcher RSS flat (end within 10% of the quarter mark)",
        f"{quarter:.0f} -> {last:.0f} MB",
        last <= quarter * 1.10 + 1,
    )
    b.check(
        "16",
        f"postgres {n:,}: 0 duplicates, 0 missing",
        f"{row.duplicates} / {row.missing}",
        row.duplicates == 0 and row.missing == 0,
    )


SCENARIOS: dict[int, Callable[[Bench], Awaitable[None]]] = {16: scenario_16}
