"""Scenarios 4 (the fake throttles: 130429, adaptive limit) and 5 (1,000,000 rows)."""

from __future__ import annotations

from datetime import timedelta

from bench import bulk
from bench.context import (
    BACKENDS,
    RATE,
    Bench,
    RunResult,
    lossless,
    utc_now,
)
from bench.harness import (
    digits,
    enroll,
    running_fake,
)
from bench.measure import pct
from dripline.store import open_store


# ---------------------------------------------------------------- scenario 4
async def scenario_4(b: Bench) -> None:
    n = b.sizes.throttled
    api_rate = 80.0
    async with running_fake(b.workdir, rate_per_s=api_rate) as fake:
        for policy in ("static", "adaptive"):
            url = await b.dbs.fresh("sqlite", f"s4{policy}")
            due = utc_now()
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
            due_at = utc_now() - timedelta(seconds=1)
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
                lossless(row),
            )
