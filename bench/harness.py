"""Plumbing for the scenarios: processes measured by the kernel, the fake, databases.

Every process under test is a child started with `subprocess.Popen` and reaped with
`os.wait4`, so its CPU time and peak RSS come from the kernel's rusage (exact, startup
included); RSS over time is sampled with psutil. Every wait here is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from sqlalchemy.engine import make_url

from dripline.store import Enrollment, migrate_database, open_store

PG_SERVER_URL = os.environ.get(
    "DRIPLINE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TOKEN = "bench-token"
PHONE_NUMBER_ID = "100000000000001"
APP_SECRET = "bench-app-secret"
BIN = Path(sys.executable).parent
DRIPLINE = str(BIN / "dripline")


def compile_dripline() -> None:
    """Byte-compile the dripline package the children will import (this checkout's
    `src/`, or the tree `PYTHONPATH` names), as installing it does: pip compiles a
    wheel's modules at install, so a deployed `dripline run --once` reads bytecode.
    An editable install has none, and with `PYTHONDONTWRITEBYTECODE=1` (set on this
    machine) every process compiled every dripline module again: 15-19% of `run
    --once`'s CPU (SQLite, alternating runs, load 7-8). Stale files are rewritten, so
    this is cheap after the first time. `BENCH_BYTECODE=0` skips it."""
    if os.environ.get("BENCH_BYTECODE", "1") == "0":
        return
    import compileall

    import dripline

    compileall.compile_dir(Path(dripline.__file__).parent, quiet=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def phone(i: int) -> str:
    """The i-th benchmark phone number (E.164); the fake reports it as digits."""
    return f"+1555{i:07d}"


def digits(i: int) -> str:
    return f"1555{i:07d}"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child: no DRIPLINE_* from the caller, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPLINE_")}
    env.update(extra)
    return env


# ------------------------------------------------------------------ processes
@dataclass
class Usage:
    """What the kernel says a finished child used."""

    cpu_s: float
    maxrss_mb: float  # includes the parent's RSS at fork: use Child.peak_mb
    exit_code: int
    sys_s: float = 0.0  # the kernel's share of cpu_s (syscalls, wake-ups)


@dataclass
class Child:
    """A measured child process."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    started: float = field(default_factory=time.monotonic)
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (epoch s, MB)
    usage: Usage | None = None
    peak_mb: float = 0.0  # VmHWM, sampled
    _proc: psutil.Process | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def sample_rss(self) -> None:
        if self.usage is not None:
            return
        # VmHWM is the peak since exec; rusage's maxrss is not usable here, because
        # Linux folds the forking parent's RSS (the harness's) into the child's maxrss.
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return
        fields = dict(line.split(":", 1) for line in status.splitlines() if line.startswith("Vm"))
        if "VmRSS" not in fields:
            return  # a zombie
        rss = int(fields["VmRSS"].split()[0]) / 1024
        self.peak_mb = max(self.peak_mb, int(fields.get("VmHWM", "0 kB").split()[0]) / 1024)
        self.rss_samples.append((time.time(), rss))

    def running(self) -> bool:
        if self.usage is not None:
            return False
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = self._proc or psutil.Process(self.pid)
            return bool(proc.status() != psutil.STATUS_ZOMBIE)
        return False

    def terminate(self) -> None:
        if self.usage is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    async def wait(self, timeout_s: float) -> Usage:
        """Reap the child (SIGKILL after `timeout_s`) and return its rusage."""
        if self.usage is not None:
            return self.usage
        self.sample_rss()
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)  # noqa: ASYNC222
            if pid:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            await asyncio.sleep(0.05)
        code = os.waitstatus_to_exitcode(status)
        self.popen.returncode = code  # reaped here; keep Popen from waiting again
        self.usage = Usage(ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, code, ru.ru_stime)
        return self.usage

    def stdout_json(self) -> Any:
        text = self.stdout_path.read_text(errors="replace").strip()
        start = text.find("{")
        if start < 0:
            return None
        try:
            return json.loads(text[start:])
        except ValueError:
            return None

    def stderr_tail(self, lines: int = 8) -> str:
        text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])


def spawn(name: str, argv: Sequence[str], env: Mapping[str, str], workdir: Path) -> Child:
    """Start a child in `workdir` with stdout and stderr in files."""
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    out, err = workdir / f"{tag}.out", workdir / f"{tag}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        popen = subprocess.Popen(list(argv), stdout=fo, stderr=fe, env=dict(env), cwd=workdir)
    return Child(name, popen, out, err)


async def stop_all(children: Sequence[Child], timeout_s: float = 30.0) -> list[Usage]:
    for child in children:
        child.terminate()
    return [await child.wait(timeout_s) for child in children]


class PostgresCpu:
    """CPU seconds PostgreSQL's server processes spend during a run.

    A backend's CPU time vanishes with it when its connection closes, so this samples
    every postgres process while the run goes on and sums, per pid, the growth since it
    was first seen (processes born during the run count from zero).
    """

    def __init__(self) -> None:
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._started = False
        self.sample()
        self._started = True

    def sample(self) -> None:
        for proc in psutil.process_iter(["name"]):
            name = proc.info.get("name") or ""
            if not name.startswith("postgres"):
                continue
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                cpu = t.user + t.system
                if proc.pid not in self._first:
                    self._first[proc.pid] = cpu if not self._started else 0.0
                self._last[proc.pid] = cpu

    @property
    def used_s(self) -> float:
        return sum(self._last[pid] - first for pid, first in self._first.items())


# ------------------------------------------------------------------ fake API
@dataclass
class Fake:
    """`dripline fake-whatsapp` in its own process."""

    child: Child
    base_url: str
    http: aiohttp.ClientSession

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.base_url}/_fake/stats") as resp:
            data: dict[str, Any] = await resp.json()
            return data

    async def messages(self) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.base_url}/_fake/messages") as resp:
            data: list[dict[str, Any]] = await resp.json()
            return data

    async def reset(self) -> None:
        async with self.http.post(f"{self.base_url}/_fake/reset") as resp:
            await resp.read()


@contextlib.asynccontextmanager
async def running_fake(
    workdir: Path,
    *,
    rate_per_s: float,
    latency_ms: float = 150.0,
    latency_p99_ms: float | None = 600.0,
    seed: int = 7,
    extra_args: Sequence[str] = (),
    port: int | None = None,
) -> AsyncIterator[Fake]:
    port = port or free_port()
    argv = [
        DRIPLINE,
        "fake-whatsapp",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--rate",
        str(rate_per_s),
        "--latency-ms",
        str(latency_ms),
        "--pair-interval-s",
        "0",
        "--access-token",
        TOKEN,
        "--seed",
        str(seed),
        # Raw throughput: free-form text to users who never wrote, as no real number
        # could send it (the bench tables say so).
        "--no-window",  # raw throughput: the table says so (bench/README.md)
    ]
    if latency_p99_ms is not None:
        argv += ["--latency-p99-ms", str(latency_p99_ms)]
    argv += list(extra_args)  # e.g. --number-rate ID=RATE (bench/senders.py)
    child = spawn("fake", argv, clean_env(DRIPLINE_LOG_LEVEL="WARNING"), workdir)
    base = f"http://127.0.0.1:{port}"
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    fake = Fake(child, base, http)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await fake.stats()
                break
            except aiohttp.ClientError:
                if time.monotonic() > deadline or not child.running():
                    raise RuntimeError(f"fake did not start: {child.stderr_tail()}") from None
                await asyncio.sleep(0.1)
        yield fake
    finally:
        await http.close()
        await stop_all([child], 10)


# ------------------------------------------------------------------ databases
def _admin_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


async def pg_admin(*statements: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(PG_SERVER_URL), timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def settle(backend: str) -> None:
    """Flush PostgreSQL's dirty pages before a measured run (`CHECKPOINT`).

    The runs before it and its own setup (a database copied from the template, the
    enrollment) leave dirty pages and WAL; a checkpoint that the server starts during
    the run then slows every commit's flush. That is the harness's own writing, not
    the run's: scenario 14 measured 0.87-0.94 s to the first send on PostgreSQL right
    after scenarios 1 and 11, and 0.57-0.64 s from a settled server.
    """
    if backend == "postgres":
        await pg_admin("CHECKPOINT")


async def pg_version() -> str:
    conn = await asyncpg.connect(_admin_dsn(PG_SERVER_URL), timeout=10)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


class Databases:
    """Fresh databases per run: SQLite files in the work directory, PostgreSQL databases
    copied from a template migrated once (dropped at the end)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._template: str | None = None
        self._created: list[str] = []
        self.tag = uuid.uuid4().hex[:6]

    async def _ensure_template(self) -> str:
        if self._template is None:
            name = f"dripline_bench_tpl_{self.tag}"
            await pg_admin(f'CREATE DATABASE "{name}"')
            self._created.append(name)
            await migrate_database(with_database(PG_SERVER_URL, name))
            self._template = name
        return self._template

    async def fresh(self, backend: str, label: str) -> str:
        name = f"dripline_bench_{label}_{uuid.uuid4().hex[:6]}"
        if backend == "sqlite":
            return f"sqlite:///{self.workdir / name}.db"
        template = await self._ensure_template()
        await pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self._created.append(name)
        return with_database(PG_SERVER_URL, name)

    async def plain_pg(self, label: str) -> str:
        """An empty PostgreSQL database (Procrastinate's)."""
        name = f"dripline_bench_{label}_{uuid.uuid4().hex[:6]}"
        await pg_admin(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return with_database(PG_SERVER_URL, name)

    @property
    def created(self) -> list[str]:
        """The PostgreSQL databases made so far."""
        return list(self._created)

    async def drop_all(self) -> None:
        for name in reversed(self._created):
            with contextlib.suppress(Exception):
                await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.clear()


async def enroll(url: str, due: Sequence[datetime], start: int = 0) -> None:
    """Enroll len(due) conversations in the demo flow, phone(start + i) due at due[i]."""
    store = await open_store(url, pool_size=1)
    try:
        now = datetime.now(UTC)
        for lo in range(0, len(due), 2_000):
            items = [
                Enrollment(phone=phone(start + i), flow="demo", at=due[i])
                for i in range(lo, min(len(due), lo + 2_000))
            ]
            await store.enroll(items, now)
    finally:
        await store.close()


class ConnectionCounter:
    """Peak of pg_stat_activity rows for one database, sampled every 0.2 s, and the
    server processes (backends) that served it: `backend_cpu_s` is their CPU, the
    run's own database work (the PostgreSQL server is shared with other databases)."""

    def __init__(self, url: str | None) -> None:
        self.database = make_url(url).database if url and url.startswith("postgres") else None
        self.peak = 0
        self._task: asyncio.Task[None] | None = None
        self.backends: set[int] = set()
        self._backend_cpu: dict[int, float] = {}

    def backend_cpu_s(self) -> float:
        """CPU seconds of this database's backends so far (a backend serves one
        database for its life, so all of its CPU is the run's; gone ones keep their
        last reading)."""
        for pid in self.backends:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                self._backend_cpu[pid] = t.user + t.system
        return sum(self._backend_cpu.values())

    async def _run(self) -> None:
        conn = await asyncpg.connect(_admin_dsn(PG_SERVER_URL), timeout=10)
        try:
            while True:
                pids = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
                )
                self.peak = max(self.peak, len(pids))
                self.backends.update(int(r["pid"]) for r in pids)
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    def start(self) -> None:
        if self.database:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> int | str:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            return self.peak
        return "1 file"
