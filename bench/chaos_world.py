"""The world a chaos run happens in, and what it measures.

A bulk-loaded backlog of conversations (one phone each, each owed exactly one message),
the fake Cloud API posting signed status webhooks to `dripline serve`, and one or more
`dripline run` workers. While a scenario does damage, the world samples the fake's
record every 0.25 s; afterwards it counts, from the fake's side (what Meta would have
accepted), the conversations never sent (**lost**) and the sends accepted twice
(**duplicated**), and from the timeline the **recovery** time: from the end of the
damage until sending runs again at half the rate it had before.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url

from bench import bulk
from bench.harness import DRIPLINE, Child, Fake, free_port, spawn, stop_all

SAMPLE_S = 0.25
LATENCY_MS = 50.0
RECOVERED_FRACTION = 0.5  # sending is back once it reaches this share of its old rate


@dataclass
class Outcome:
    """One chaos run's result: a row of docs/reliability.md's table."""

    scenario: str
    backend: str
    what: str
    conversations: int
    lost: int = 0
    duplicated: int = 0
    recovery_s: float | None = None  # end of the damage -> sending at half its rate
    complete_s: float | None = None  # end of the damage -> the last conversation sent
    faults: list[tuple[float, float]] = field(default_factory=list)  # (start, end) s
    db_states: dict[str, int] = field(default_factory=dict)
    statuses_missing: int | None = None  # sent, yet no `delivered` applied at the end
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class World:
    """Processes of one chaos run; `t()` is seconds since the workers started."""

    def __init__(self, b: Any, fake: Fake, url: str, proc_url: str, total: int) -> None:
        self.b = b
        self.fake = fake
        self.url = url  # what the harness reads with
        self.proc_url = proc_url  # what dripline's processes use (maybe via a proxy)
        self.total = total
        self.serve_port = free_port()
        self.workers: list[Child] = []
        self.server: Child | None = None
        self.timeline: list[tuple[float, int, int]] = []  # (t, accepted, duplicates)
        self.t0 = time.monotonic()
        self.exits: list[int] = []

    def t(self) -> float:
        return time.monotonic() - self.t0

    def env(self) -> dict[str, str]:
        return dict(self.b.dripline_env(self.proc_url, self.fake))

    async def start_serve(self) -> Child:
        argv = [DRIPLINE, "serve", "--port", str(self.serve_port)]
        self.server = spawn("serve", argv, self.env(), self.b.workdir)
        base = f"http://127.0.0.1:{self.serve_port}"
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.server.running():
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            return self.server
                await asyncio.sleep(0.2)
        raise RuntimeError(f"serve did not start: {self.server.stderr_tail()}")

    def start_worker(self, rate: float) -> Child:
        argv = [
            DRIPLINE,
            "run",
            "--policy",
            "static",
            "--rate",
            str(rate),
            "--concurrency",
            "32",
            "--batch-limit",
            "200",
        ]
        child = spawn(f"worker{len(self.workers)}", argv, self.env(), self.b.workdir)
        self.workers.append(child)
        return child

    async def sample(self) -> tuple[int, int]:
        stats = await self.fake.stats()
        accepted, dups = int(stats["accepted"]), int(stats["duplicates"])
        self.timeline.append((self.t(), accepted, dups))
        for child in (*self.workers, *([self.server] if self.server else [])):
            child.sample_rss()
        return accepted, dups

    def sent(self) -> int:
        """Conversations the fake accepted at least once."""
        if not self.timeline:
            return 0
        _, accepted, dups = self.timeline[-1]
        return accepted - dups

    async def run_until_done(self, damage: asyncio.Task[None], limit_s: float) -> None:
        """Sample until every conversation was sent and the damage is over (then 5 s
        more, for late duplicates), or until `limit_s` after the damage ended."""
        done_at: float | None = None
        over_at: float | None = None
        self.b.progress.start("chaos", self.total)
        try:
            while True:
                await self.sample()
                self.b.progress.advance(min(self.sent(), self.total), f"t={self.t():.0f}s")
                if damage.done() and over_at is None:
                    damage.result()  # raise what went wrong in the scenario
                    over_at = self.t()
                if over_at is not None and self.sent() >= self.total and done_at is None:
                    done_at = self.t()
                if done_at is not None and self.t() - done_at >= 5.0:
                    break
                if over_at is not None and self.t() - over_at > limit_s:
                    self.b.progress.note(f"chaos: time limit, {self.sent()}/{self.total} sent")
                    break
                await asyncio.sleep(SAMPLE_S)
        finally:
            self.b.progress.finish()
            if not damage.done():
                damage.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await damage

    async def stop(self) -> None:
        children = [c for c in (*self.workers, self.server) if c is not None]
        usages = await stop_all(children, 40)
        self.exits = [u.exit_code for u in usages]

    # ------------------------------------------------------------ measures
    def rate_before(self, at: float, window_s: float = 5.0) -> float:
        a = self._accepted_at(at - window_s)
        b = self._accepted_at(at)
        return (b - a) / window_s

    def _accepted_at(self, t: float) -> int:
        last = 0
        for ts, accepted, _ in self.timeline:
            if ts > t:
                break
            last = accepted
        return last

    def recovery_after(self, end: float, rate_before: float) -> float | None:
        """Seconds from `end` until a 1 s window at >= RECOVERED_FRACTION x `rate_before`
        (0.0 if sending never fell below it)."""
        if rate_before <= 0:
            return None
        wanted = rate_before * RECOVERED_FRACTION
        for ts, accepted, _ in self.timeline:
            if ts < end:
                continue
            if self._accepted_at(ts + 1.0) - accepted >= wanted and ts + 1.0 <= self.t():
                return round(max(0.0, ts - end), 1)
        return None

    def complete_after(self, end: float) -> float | None:
        for ts, accepted, dups in self.timeline:
            if accepted - dups >= self.total:
                return round(max(0.0, ts - end), 1)
        return None

    async def db_states(self) -> tuple[dict[str, int], int]:
        """Message rows by status, and conversations never sent ({status: n}, n)."""
        q_msgs = "SELECT status, count(*) FROM messages GROUP BY status"
        q_pending = "SELECT count(*) FROM conversations WHERE step = 0 AND state = 'pending'"
        if self.url.startswith("sqlite"):
            path = make_url(self.url).database or ""

            def read() -> tuple[list[Any], int]:
                with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
                    rows = conn.execute(q_msgs).fetchall()
                    return rows, int(conn.execute(q_pending).fetchone()[0])

            rows, pending = await asyncio.to_thread(read)
        else:
            conn = await asyncpg.connect(bulk.pg_dsn(self.url), timeout=10)
            try:
                rows = await conn.fetch(q_msgs)
                pending = int(await conn.fetchval(q_pending))
            finally:
                await conn.close()
        return {str(r[0]): int(r[1]) for r in rows}, pending


def outcome(
    world: World,
    *,
    scenario: str,
    backend: str,
    what: str,
    faults: Sequence[tuple[float, float]],
    db: dict[str, int],
) -> Outcome:
    out = Outcome(scenario, backend, what, world.total, faults=list(faults), db_states=db)
    _, accepted, dups = world.timeline[-1]
    out.duplicated = dups
    out.lost = max(0, world.total - (accepted - dups))
    recoveries = [world.recovery_after(end, world.rate_before(start)) for start, end in faults]
    known = [r for r in recoveries if r is not None]
    out.recovery_s = max(known) if known else None
    out.complete_s = world.complete_after(max(end for _, end in faults)) if faults else None
    out.statuses_missing = db.get("sent", 0) + db.get("unknown", 0)
    bad = [code for code in world.exits if code not in (0, -15, -9)]
    if bad:
        out.notes += f"unexpected exit codes {bad}; "
    return out


def write_outcome(b: Any, out: Outcome, path: Path | None = None) -> None:
    """Keep the outcome in the report (`ratios` holds free-form results)."""
    b.extra.setdefault("chaos", []).append(out.as_dict())
    b.check(
        "chaos",
        f"{out.scenario} ({out.backend}): 0 lost, 0 duplicated",
        f"{out.lost} / {out.duplicated}",
        out.lost == 0 and out.duplicated == 0,
    )
