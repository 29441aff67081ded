"""The soak run (issue 13, item 6): millions of messages through one worker, sampled.

One `dripline run` drains a bulk-loaded backlog against the fake at a high rate with a
low latency, while `dripline serve` takes the fake's status webhooks into the inbox.
Every `SAMPLE_S` the harness records, for both processes: RSS, open files
(`/proc/PID/fd`), database connections (TCP connections to PostgreSQL's port; on SQLite
the handles open on the database file and its -wal/-shm), and the inbox backlog.

The verdict is the dispatcher's RSS growth per 100,000 messages after warm-up: the
slope of a least-squares line through (messages accepted, RSS) for the samples past
`warmup_messages()`: a tenth of the run, and never less than the dispatcher's two
statistics reservoirs take to fill (the first part holds the allocator's, SQLite's page
cache's and those reservoirs' growth to their working size, which is not a leak).
Goal: < 1 MB per 100,000.

`--dripline-src DIR` runs the worker and `serve` from another checkout's `src/`, to
measure an older commit with the same harness (the fake stays this checkout's): the
schema is then created by that code too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from sqlalchemy.engine import make_url

from bench import bulk
from bench.harness import (
    DRIPLINE,
    Child,
    clean_env,
    free_port,
    running_fake,
    spawn,
    stop_all,
)
from bench.measure import Row
from dripline.dispatcher.stats import Reservoir
from dripline.store import open_store

SAMPLE_S = 5.0
WARMUP_FRACTION = 0.1
# The lag and latency reservoirs (dispatcher/stats.py) append one float per message
# until they hold RESERVOIR_SIZE, ~1.6 MB each, then stay flat by design: a fit that
# starts before they are full reads their filling as a leak (a 150,000-message run
# measured 2.5 MB per 100,000 from 15,000 messages, 0.28 from 60,000).
RESERVOIR_FILL = Reservoir().size + 10_000
GOAL_MB_PER_100K = 1.0
RATE = 2000.0  # above what one worker reaches here: the machine is the limit
CONCURRENCY = 64  # x 5 ms latency: ~12,800/s of room, never the bound
LATENCY_MS = 5.0
PG_PORT = 5432


@dataclass
class Sample:
    t: float  # seconds since the worker started
    accepted: int  # messages the fake accepted so far
    worker_rss_mb: float
    worker_fds: int
    worker_db: int
    serve_rss_mb: float
    serve_fds: int
    serve_db: int
    inbox_waiting: int
    inbox_oldest_s: float | None
    # RSS split (/proc/PID/status): anonymous memory (heap, SQLite's caches, arenas),
    # file-backed pages and shared memory (SQLite's -shm wal-index is mapped shared),
    # and the size of the SQLite -wal file. Older logs have none of these.
    worker_anon_mb: float = 0.0
    worker_file_mb: float = 0.0
    worker_shmem_mb: float = 0.0
    wal_mb: float = 0.0


def proc_status_mb(pid: int, *fields: str) -> list[float]:
    """Fields of /proc/PID/status in MB (0 for a field missing or a process gone)."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                found[key] = int(value.split()[0]) / 1024
    return [round(found.get(f, 0.0), 2) for f in fields]


def proc_rss_mb(pid: int) -> float:
    return proc_status_mb(pid, "VmRSS")[0]


def wal_mb(url: str) -> float:
    """Size of the SQLite database's -wal file (0 on PostgreSQL or with no file)."""
    if not url.startswith("sqlite"):
        return 0.0
    with contextlib.suppress(OSError):
        return round(Path(f"{make_url(url).database}-wal").stat().st_size / 2**20, 2)
    return 0.0


def open_fds(pid: int) -> list[str]:
    """Targets of the process's open file descriptors ([] once it is gone)."""
    out: list[str] = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


def db_handles(pid: int, url: str, fds: list[str]) -> int:
    """Database connections of one process: TCP connections to PostgreSQL, or the
    descriptors open on the SQLite file (each connection holds the file, and in WAL
    mode its -wal and -shm as well)."""
    if url.startswith("sqlite"):
        path = make_url(url).database or ""
        return sum(1 for target in fds if target.startswith(path))
    with contextlib.suppress(psutil.Error):
        conns = psutil.Process(pid).net_connections(kind="tcp")
        return sum(1 for c in conns if c.raddr and c.raddr.port == PG_PORT)
    return 0


def warmup_messages(total: int) -> int:
    """Messages left out of the fit: a tenth of the run, and at least RESERVOIR_FILL
    in a run long enough to fit anything after it (a smoke run keeps the tenth)."""
    fill = RESERVOIR_FILL if total >= 2 * RESERVOIR_FILL else 0
    return max(int(total * WARMUP_FRACTION), fill)


def slope_mb_per_100k(
    samples: list[Sample], total: int, warmup: int | None = None, field: str = "worker_rss_mb"
) -> tuple[float | None, int]:
    """Growth of one sampled figure (worker RSS by default) per 100,000 messages after
    warm-up (`warmup` messages, default `warmup_messages(total)`), and the samples used."""
    first = warmup_messages(total) if warmup is None else warmup
    warm = [s for s in samples if s.accepted >= first and getattr(s, field)]
    if len(warm) < 3 or warm[-1].accepted == warm[0].accepted:
        return None, len(warm)
    fit = statistics.linear_regression(
        [float(s.accepted) for s in warm], [float(getattr(s, field)) for s in warm]
    )
    return fit.slope * 100_000, len(warm)


_INBOX_SQL = "SELECT count(*), min(received_at) FROM inbox WHERE processed_at IS NULL"


async def inbox_waiting(url: str) -> tuple[int, float | None]:
    """Inbox rows not yet processed, and the oldest one's age in seconds.

    Plain SQL rather than the store: `open_store` would migrate the schema, and with
    `--dripline-src` the code under test is older than this checkout."""
    try:
        if url.startswith("sqlite"):
            path = make_url(url).database

            def read() -> tuple[int, str | None]:
                with contextlib.closing(
                    sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
                ) as conn:
                    n, oldest = conn.execute(_INBOX_SQL).fetchone()
                    return int(n), oldest

            n, raw = await asyncio.to_thread(read)
            at = datetime.fromisoformat(raw).replace(tzinfo=UTC) if raw else None
        else:
            conn = await asyncpg.connect(bulk.pg_dsn(url), timeout=10)
            try:
                rec = await conn.fetchrow(_INBOX_SQL)
            finally:
                await conn.close()
            n, at = int(rec[0]), rec[1]
    except (OSError, sqlite3.Error, asyncpg.PostgresError):
        return 0, None  # not created yet
    age = round(time.time() - at.timestamp(), 1) if at is not None else None
    return n, age


async def _create_schema(url: str, src: str | None) -> None:
    """An empty schema, made by the code under test (an older checkout's if given)."""
    if src is None:
        store = await open_store(url, pool_size=1)
        await store.close()
        return
    code = (
        "import asyncio, sys\n"
        "from dripline.store import open_store\n"
        "async def main():\n"
        "    s = await open_store(sys.argv[1], pool_size=1)\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
    )
    env = clean_env(PYTHONPATH=str(Path(src) / "src"))
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code, url], env=env, check=True, timeout=120
    )


async def soak(
    b: Any, backend: str, total: int, src: str | None = None, log: Path | None = None
) -> Row:
    """Push `total` messages through one worker; add the row to `b` and return it.
    Each sample is also appended to `log` (JSON lines) as it is taken, so a run cut
    short still leaves its curve."""
    url = await b.dbs.fresh(backend, "soak")
    await _create_schema(url, src)
    b.progress.note(f"soak {backend}: loading {total:,} due conversations")
    load_s = await bulk.load_conversations(url, total, total, 0)
    serve_port = free_port()
    fake_args = [
        "--webhook-url",
        f"http://127.0.0.1:{serve_port}/webhook",
        "--app-secret",
        "bench-app-secret",
        "--read-fraction",
        "0",
    ]
    async with running_fake(
        b.workdir, rate_per_s=0, latency_ms=LATENCY_MS, latency_p99_ms=None, extra_args=fake_args
    ) as fake:
        env = b.dripline_env(url, fake)
        if src is not None:  # serve too: this checkout's would migrate the schema onwards
            env["PYTHONPATH"] = str(Path(src) / "src")
        server = spawn("serve", [DRIPLINE, "serve", "--port", str(serve_port)], env, b.workdir)
        # The console script's entry point, through this interpreter, so PYTHONPATH
        # (an older checkout, with --dripline-src) decides which dripline runs.
        argv = [
            sys.executable,
            "-c",
            "import sys; from dripline.cli import main; sys.argv[0] = 'dripline'; main()",
            "run",
            "--json",
            "--policy",
            "static",
            "--rate",
            str(RATE),
            "--concurrency",
            str(CONCURRENCY),
            "--batch-limit",
            "1000",
        ]
        worker = spawn("soak-worker", argv, env, b.workdir)
        samples, wall_s = await _sample(b, fake, worker, server, url, total, log)
        await stop_all([worker, server], 60)
        stats = await fake.stats()
    slope, used = slope_mb_per_100k(samples, total)
    serve_slope, _ = slope_mb_per_100k(samples, total, field="serve_rss_mb")
    anon_slope, _ = slope_mb_per_100k(samples, total, field="worker_anon_mb")
    accepted = int(stats["accepted"])
    dups = int(stats["duplicates"])
    row = Row(
        scenario="soak", run=f"{total:,} messages, one worker", system="dripline", backend=backend
    )
    row.messages = accepted - dups
    row.wall_s = round(wall_s, 1)
    row.throughput_per_s = round(accepted / wall_s, 1) if wall_s else None
    row.duplicates = dups
    row.missing = max(0, total - (accepted - dups))
    row.peak_rss_mb = round(worker.peak_mb, 1)
    row.db_connections = max((s.worker_db for s in samples), default=0)
    row.extra.update(
        load_s=round(load_s, 1),
        rss_slope_mb_per_100k=None if slope is None else round(slope, 3),
        serve_rss_slope_mb_per_100k=None if serve_slope is None else round(serve_slope, 3),
        anon_slope_mb_per_100k=None if anon_slope is None else round(anon_slope, 3),
        fit_samples=used,
        warmup_messages=warmup_messages(total),
        worker_exit=worker.usage.exit_code if worker.usage else None,
        worker_src=src or "this checkout",
        samples=[asdict(s) for s in samples],
        fds_max=max((s.worker_fds for s in samples), default=0),
        serve_fds_max=max((s.serve_fds for s in samples), default=0),
        inbox_waiting_max=max((s.inbox_waiting for s in samples), default=0),
        inbox_waiting_last=samples[-1].inbox_waiting if samples else None,
    )
    first = next((s for s in samples if s.accepted >= warmup_messages(total)), None)
    last = samples[-1] if samples else None
    row.notes = (
        f"RSS {first.worker_rss_mb if first else 0:.0f} -> {last.worker_rss_mb if last else 0:.0f}"
        f" MB after warm-up, slope {slope if slope is not None else float('nan'):.2f} MB"
        f" per 100,000 (serve {serve_slope if serve_slope is not None else float('nan'):.2f});"
        f" fds max {row.extra['fds_max']}, inbox waiting max {row.extra['inbox_waiting_max']}"
    )
    if worker.usage is not None and worker.usage.exit_code not in (0, -15):
        row.notes += f"; worker exit {worker.usage.exit_code}: {worker.stderr_tail(3)}"
    b.add(row)
    if slope is not None:
        b.check(
            "soak",
            f"{backend}: RSS growth after warm-up < {GOAL_MB_PER_100K:g} MB per 100,000",
            f"{slope:.2f} MB",
            slope < GOAL_MB_PER_100K,
        )
    b.check(
        "soak",
        f"{backend}: 0 duplicates, 0 missing",
        f"{row.duplicates} / {row.missing}",
        row.duplicates == 0 and row.missing == 0,
    )
    return row


async def _sample(
    b: Any, fake: Any, worker: Child, server: Child, url: str, total: int, log: Path | None
) -> tuple[list[Sample], float]:
    """Sample until every message is accepted and the inbox drained (or the worker
    died, or the time limit: 20 ms per message, at least 5 minutes)."""
    samples: list[Sample] = []
    started = time.monotonic()
    deadline = started + max(300.0, total * 0.02)
    b.progress.start(f"soak {total:,}", total)
    done_at: float | None = None
    try:
        while True:
            stats = await fake.stats()
            accepted = int(stats["accepted"])
            waiting, oldest = await inbox_waiting(url)
            wfds, sfds = open_fds(worker.pid), open_fds(server.pid)
            worker.sample_rss()
            server.sample_rss()
            anon, file_, shmem = proc_status_mb(worker.pid, "RssAnon", "RssFile", "RssShmem")
            samples.append(
                Sample(
                    t=round(time.monotonic() - started, 1),
                    accepted=accepted,
                    worker_rss_mb=round(proc_rss_mb(worker.pid), 2),
                    worker_fds=len(wfds),
                    worker_db=db_handles(worker.pid, url, wfds),
                    serve_rss_mb=round(proc_rss_mb(server.pid), 2),
                    serve_fds=len(sfds),
                    serve_db=db_handles(server.pid, url, sfds),
                    inbox_waiting=waiting,
                    inbox_oldest_s=oldest,
                    worker_anon_mb=anon,
                    worker_file_mb=file_,
                    worker_shmem_mb=shmem,
                    wal_mb=wal_mb(url),
                )
            )
            s = samples[-1]
            if log is not None:
                with log.open("a") as f:
                    f.write(json.dumps(asdict(s)) + "\n")
            b.progress.advance(
                min(accepted, total),
                f"RSS {s.worker_rss_mb:.0f} MB (anon {anon:.0f}), fds {s.worker_fds}, "
                f"inbox {waiting}",
            )
            if accepted >= total and done_at is None:
                done_at = time.monotonic()
            if done_at is not None and (waiting == 0 or time.monotonic() - done_at > 60):
                break
            if not worker.running() or time.monotonic() > deadline:
                b.progress.note(f"soak: stopped at {accepted:,}/{total:,}")
                break
            await asyncio.sleep(SAMPLE_S if total > 100_000 else 1.0)
    finally:
        b.progress.finish()
    end = done_at if done_at is not None else time.monotonic()
    return samples, end - started


def fit_log(path: Path, warmup: int) -> dict[str, Any]:
    """The slopes of a sample log (`soak-*.jsonl`), also of a run cut short."""
    samples = [Sample(**json.loads(line)) for line in path.read_text().splitlines() if line]
    last = samples[-1].accepted if samples else 0
    worker, used = slope_mb_per_100k(samples, last, warmup)
    serve, _ = slope_mb_per_100k(samples, last, warmup, field="serve_rss_mb")
    anon, _ = slope_mb_per_100k(samples, last, warmup, field="worker_anon_mb")
    after = [s for s in samples if s.accepted >= warmup]
    return {
        "log": str(path),
        "messages": last,
        "warmup": warmup,
        "fit_samples": used,
        "worker_rss_slope_mb_per_100k": None if worker is None else round(worker, 3),
        "serve_rss_slope_mb_per_100k": None if serve is None else round(serve, 3),
        "worker_anon_slope_mb_per_100k": None if anon is None else round(anon, 3),
        "worker_rss_mb_first_last": [after[0].worker_rss_mb, after[-1].worker_rss_mb]
        if after
        else None,
        "worker_fds_max": max((s.worker_fds for s in samples), default=0),
        "worker_db_max": max((s.worker_db for s in samples), default=0),
        "serve_db_max": max((s.serve_db for s in samples), default=0),
        "inbox_waiting_max": max((s.inbox_waiting for s in samples), default=0),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.soak LOG.jsonl [--warmup N]`: fit a soak's sample log."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=main.__doc__)
    parser.add_argument("log", type=Path)
    parser.add_argument(
        "--warmup", type=int, default=RESERVOIR_FILL, help="Messages to skip (default %(default)s)."
    )
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(fit_log(args.log, args.warmup), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
