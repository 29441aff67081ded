"""Issue 13's chaos scenarios: damage done to a running dripline, bounded in time.

Each scenario bulk-loads a backlog (one phone per conversation, each owed exactly one
message), starts the fake Cloud API (50 ms latency, signed status webhooks to `dripline
serve`), `serve` and the workers, waits until sending is under way, does its damage,
and reports lost, duplicated and recovery time (see `chaos_world`). Everything stays on
loopback; nothing here touches the shared PostgreSQL server itself.

    chaos-kill-workers   SIGKILL a random worker 8 times (each replaced at once)
    chaos-kill-serve     SIGKILL `serve` 4 times, down 1-5 s each
    chaos-pg             PostgreSQL cut (connections reset, then refused) for 30 s,
                         through a proxy in front of it (`pgproxy`)
    chaos-api            the Cloud API answering bare 503s for 60 s
    chaos-disk           the disk of the SQLite database full for 30 s (a 64 MB tmpfs,
                         filled by a file that is then deleted)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench import bulk
from bench.chaos_world import LATENCY_MS, Outcome, World, outcome, write_outcome
from bench.harness import APP_SECRET, PG_SERVER_URL, free_port, running_fake
from bench.pgproxy import PgProxy
from dripline.store import open_store

RATE = 150.0  # msg/s for the whole run (split between workers)
SEED = 13
LIMIT_S = 240.0  # after the damage ends, at most this long to finish


@contextlib.asynccontextmanager
async def world(
    b: Any,
    backend: str,
    label: str,
    total: int,
    *,
    url: str | None = None,
    proc_url: Callable[[str], str] = lambda u: u,
) -> AsyncIterator[World]:
    url = url or await b.dbs.fresh(backend, label)
    if backend == "sqlite":
        store = await open_store(url, pool_size=1)  # creates the schema
        await store.close()
    await bulk.load_conversations(url, total, total, 0)
    serve_port = free_port()
    args = [
        "--webhook-url",
        f"http://127.0.0.1:{serve_port}/webhook",
        "--app-secret",
        APP_SECRET,
        "--read-fraction",
        "0",
        # Meta retries a failed delivery for up to 7 days; the fake's default gives up
        # after 8 attempts (~1 min), which `serve` killed 4 times can outlast.
        "--webhook-max-attempts",
        "40",
    ]
    async with running_fake(
        b.workdir, rate_per_s=0, latency_ms=LATENCY_MS, latency_p99_ms=None, extra_args=args
    ) as fake:
        w = World(b, fake, url, proc_url(url), total)
        w.serve_port = serve_port
        try:
            yield w
        finally:
            await w.stop()


async def until_sent(w: World, n: int) -> None:
    while w.sent() < n:
        if not any(c.running() for c in w.workers):
            raise RuntimeError(f"every worker exited: {w.workers[0].stderr_tail()}")
        await asyncio.sleep(0.1)


async def finish(
    w: World, damage: Callable[[], Awaitable[list[tuple[float, float]]]], **names: str
) -> Outcome:
    faults: list[tuple[float, float]] = []

    async def run() -> None:
        faults.extend(await damage())

    task = asyncio.create_task(run())
    await w.run_until_done(task, LIMIT_S)
    await settle_statuses(w)
    hooks = (await w.fake.stats())["webhooks"]
    await w.stop()
    db, never = await w.db_states()
    out = outcome(w, faults=faults, db=db, **names)
    out.notes += (
        f"{never} conversations still at their first step; webhook POSTs failed "
        f"{hooks['failures']} times (retried), {hooks['pending']} updates still pending; "
    )
    return out


async def settle_statuses(w: World, limit_s: float = 120.0) -> None:
    """Wait (bounded) for the fake's webhook retries to land: every accepted message
    `delivered` in the database."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while loop.time() < deadline:
        with contextlib.suppress(Exception):
            db, _ = await w.db_states()
            if db.get("sent", 0) + db.get("sending", 0) == 0:
                return
        await asyncio.sleep(1.0)


# ---------------------------------------------------------------- the scenarios
async def kill_workers(b: Any, backend: str) -> Outcome:
    rng = random.Random(SEED)
    total = 6000
    async with world(b, backend, "killw", total) as w:
        await w.start_serve()
        for _ in range(3):
            w.start_worker(RATE)

        async def damage() -> list[tuple[float, float]]:
            await until_sent(w, 500)
            kills: list[tuple[float, float]] = []
            for _ in range(8):
                await asyncio.sleep(rng.uniform(1.0, 4.0))
                victim = rng.choice([c for c in w.workers if c.running()])
                os.kill(victim.pid, signal.SIGKILL)
                kills.append((w.t(), w.t()))
                await victim.wait(10)
                w.start_worker(RATE)
            return kills

        return await finish(
            w,
            damage,
            scenario="chaos-kill-workers",
            backend=backend,
            what="SIGKILL a random one of 3 workers 8 times, 1-4 s apart, each replaced",
        )


async def kill_serve(b: Any, backend: str) -> Outcome:
    rng = random.Random(SEED)
    total = 6000
    async with world(b, backend, "kills", total) as w:
        await w.start_serve()
        for _ in range(2):
            w.start_worker(RATE)

        async def damage() -> list[tuple[float, float]]:
            await until_sent(w, 500)
            outages: list[tuple[float, float]] = []
            for _ in range(4):
                await asyncio.sleep(rng.uniform(2.0, 6.0))
                assert w.server is not None
                os.kill(w.server.pid, signal.SIGKILL)
                start = w.t()
                await w.server.wait(10)
                await asyncio.sleep(rng.uniform(1.0, 5.0))
                await w.start_serve()
                outages.append((start, w.t()))
            return outages

        return await finish(
            w,
            damage,
            scenario="chaos-kill-serve",
            backend=backend,
            what="SIGKILL `serve` 4 times, 2-6 s apart, restarted after 1-5 s; 2 workers",
        )


async def pg_outage(b: Any, backend: str) -> Outcome:
    if backend != "postgres":
        raise ValueError("chaos-pg runs on PostgreSQL only")
    server = make_url(PG_SERVER_URL)
    proxy = PgProxy(server.host or "127.0.0.1", server.port or 5432, free_port())
    await proxy.start()
    total = 10_000

    def via_proxy(url: str) -> str:
        return make_url(url).set(port=proxy.port).render_as_string(hide_password=False)

    try:
        async with world(b, backend, "pg", total, proc_url=via_proxy) as w:
            await w.start_serve()
            for _ in range(2):
                w.start_worker(RATE)

            async def damage() -> list[tuple[float, float]]:
                await until_sent(w, 1500)
                start = w.t()
                await proxy.cut()
                await asyncio.sleep(30.0)
                await proxy.restore()
                return [(start, w.t())]

            return await finish(
                w,
                damage,
                scenario="chaos-pg",
                backend=backend,
                what="PostgreSQL unreachable 30 s (every connection reset, then refused), "
                "via a loopback proxy; serve + 2 workers",
            )
    finally:
        await proxy.close()


async def api_down(b: Any, backend: str) -> Outcome:
    total = 9000
    async with world(b, backend, "api", total) as w:
        await w.start_serve()
        for _ in range(2):
            w.start_worker(RATE)

        async def damage() -> list[tuple[float, float]]:
            await until_sent(w, 1500)
            start = w.t()
            async with w.fake.http.post(
                f"{w.fake.base_url}/_fake/outage", json={"duration_s": 60.0}
            ) as resp:
                resp.raise_for_status()
            await asyncio.sleep(60.0)
            return [(start, w.t())]

        return await finish(
            w,
            damage,
            scenario="chaos-api",
            backend=backend,
            what="the Cloud API answers bare 503 to every send for 60 s; serve + 2 workers",
        )


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Any:
    """A tmpfs of `size_mb` at `path` (needs root: the benchmark machine's containers
    run as root; elsewhere this fails with mount's own message)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(path: Path) -> int:
    """Write `path` until the disk is full; the bytes written."""
    written = 0
    chunk = b"\0" * (256 * 1024)
    with path.open("wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
        try:
            while True:
                f.write(chunk)
                f.flush()
                written += len(chunk)
        except OSError:
            pass
        # Fill the last partial chunk's worth too.
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
                f.flush()
                written += 4096
    return written


async def disk_full(b: Any, backend: str) -> Outcome:
    if backend != "sqlite":
        raise ValueError("chaos-disk runs on SQLite only")
    total = 7000
    with small_disk(b.workdir / "small-disk", 64) as disk:
        url = f"sqlite:///{disk / 'dripline.db'}"
        async with world(b, backend, "disk", total, url=url) as w:
            await w.start_serve()
            w.start_worker(RATE)
            filler = disk / "filler"

            async def damage() -> list[tuple[float, float]]:
                await until_sent(w, 1500)
                start = w.t()
                size = await asyncio.to_thread(fill, filler)
                b.progress.note(f"chaos-disk: disk full ({size / 1e6:.0f} MB of filler)")
                await asyncio.sleep(30.0)
                filler.unlink()
                return [(start, w.t())]

            return await finish(
                w,
                damage,
                scenario="chaos-disk",
                backend=backend,
                what="the SQLite database's disk (a 64 MB tmpfs) full for 30 s; serve + 1 worker",
            )


SCENARIOS: dict[str, tuple[Callable[[Any, str], Awaitable[Outcome]], str]] = {
    "chaos-kill-workers": (kill_workers, "postgres"),
    "chaos-kill-serve": (kill_serve, "sqlite"),
    "chaos-pg": (pg_outage, "postgres"),
    "chaos-api": (api_down, "postgres"),
    "chaos-disk": (disk_full, "sqlite"),
}


async def run(b: Any, name: str, backends: list[str]) -> None:
    scenario, default = SCENARIOS[name]
    for backend in backends or [default]:
        b.progress.note(f"{name} on {backend}")
        write_outcome(b, await scenario(b, backend))
