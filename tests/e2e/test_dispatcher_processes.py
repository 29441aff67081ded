"""The dispatcher as users run it: `dripline run` processes against the fake Cloud API.

Crash recovery, several workers on one PostgreSQL, a PostgreSQL restart mid-run, and
overlapping `--once` runs. The fake runs in the test's event loop; the workers are
real subprocesses configured through DRIPLINE_* environment variables.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from dripline.fake import FakeConfig, RunningFake, running_fake
from dripline.store import open_store
from tests.fixtures.dispatch import NUMBER, TOKEN, enroll, message_rows, phones, received

DRIPLINE = str(Path(sys.executable).with_name("dripline"))
_counter = itertools.count()


# `serve` needs one; tests send it as AUTH.
API_TOKEN = "e2e-processes-api-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def worker_env(database_url: str, fake: RunningFake, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPLINE_")}
    env.update(
        {
            "DRIPLINE_DATABASE_URL": database_url,
            "DRIPLINE_WHATSAPP_BASE_URL": fake.base_url,
            "DRIPLINE_WHATSAPP_ACCESS_TOKEN": TOKEN,
            "DRIPLINE_WHATSAPP_PHONE_NUMBER_ID": NUMBER,
            "DRIPLINE_PAIR_INTERVAL_S": "0",
            "DRIPLINE_HEARTBEAT_S": "0.5",
            # A send starts only while its lease outlives its read timeout (fencing):
            # a short lease needs a short timeout.
            "DRIPLINE_LEASE_TTL_S": "4",
            "DRIPLINE_HTTP_READ_TIMEOUT_S": "2",
            "DRIPLINE_UNKNOWN_AFTER_S": "1",
            "DRIPLINE_LOG_FORMAT": "json",
            "DRIPLINE_API_TOKEN": API_TOKEN,
        }
    )
    env.update(extra)
    return env


@dataclass
class Worker:
    """A `dripline run` subprocess whose output goes to files: a pipe nobody reads
    would block the worker once it filled."""

    proc: asyncio.subprocess.Process
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    async def wait(self, timeout_s: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    async def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM (a graceful shutdown), then wait."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout_s)


async def start_worker(env: dict[str, str], logs: Path, *args: str, command: str = "run") -> Worker:
    """`dripline run ARGS` (or another `command`) as a subprocess, output in `logs`."""
    n = next(_counter)
    out, err = logs / f"{command}{n}.out", logs / f"{command}{n}.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = await asyncio.create_subprocess_exec(
            DRIPLINE, command, *args, env=env, stdout=o, stderr=e
        )
    return Worker(proc, out, err)


async def wait_accepted(fake: RunningFake, n: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while len(fake.state.messages) < n:
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_sigkill_mid_run_loses_nothing(store_url: str, tmp_path: Path) -> None:
    """A worker killed with SIGKILL mid-run; a second one picks up after the leases lapse.

    At most once: each conversation got its question once, except rows left `sending`
    by the killed worker, which are reported `unknown` (and, without webhooks, never
    resent)."""
    numbers = phones(3000)
    store = await open_store(store_url)
    try:
        await enroll(store, numbers)
        config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0, latency_ms=50)
        async with running_fake(config) as fake:
            env = worker_env(store_url, fake, DRIPLINE_RATE_PER_S="600")
            first = await start_worker(env, tmp_path)
            await wait_accepted(fake, 800, 60)
            first.proc.kill()
            await first.wait(10)
            assert len(fake.state.messages) < len(numbers)
            second = await start_worker(env, tmp_path, "--once", "--max-seconds", "90")
            assert await second.wait(120) == 0, second.stderr()[-2000:]
            got = received(fake)
        rows = await message_rows(store)
    finally:
        await store.close()
    unknown = {r.conversation_id for r in rows if r.status == "unknown"}
    assert all(n == 1 for n in got.values()), "a question was sent twice"
    statuses = Counter(r.status for r in rows)
    assert statuses["sent"] + statuses["unknown"] == len(numbers), statuses
    # Every conversation not reported unknown received its question.
    assert len(got) >= len(numbers) - len(unknown)
    assert statuses["sending"] == 0


@pytest.mark.postgres
@pytest.mark.slow
async def test_four_workers_share_one_rate_limit(postgres_url: str, tmp_path: Path) -> None:
    numbers = phones(4000)
    store = await open_store(postgres_url)
    try:
        await enroll(store, numbers)
        config = FakeConfig(
            access_token=TOKEN, rate_per_s=500, burst=500, pair_interval_s=0, latency_ms=20
        )
        async with running_fake(config) as fake:
            env = worker_env(
                postgres_url, fake, DRIPLINE_RATE_PER_S="480", DRIPLINE_CONCURRENCY="64"
            )
            workers = [await start_worker(env, tmp_path, "--once", "--json") for _ in range(4)]
            codes = [await w.wait(120) for w in workers]
            got = received(fake)
            throttled = fake.state.errors_by_code.get(130429, 0)
    finally:
        await store.close()
    for w, code in zip(workers, codes, strict=True):
        assert code == 0, w.stderr()[-2000:]
    assert got == Counter({p: 1 for p in numbers})
    sent_by_worker = [int(json.loads(w.stdout())["sent"]) for w in workers]
    assert sum(sent_by_worker) == len(numbers)
    assert sum(1 for n in sent_by_worker if n > 0) >= 2
    # The workers split the 480/s budget; the fake's 500/s limit was (nearly) never hit.
    assert throttled < 0.01 * len(numbers)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_postgres_restart_mid_run(postgres_url: str, tmp_path: Path) -> None:
    """`pg_ctlcluster ... restart` mid-run: the worker logs it, reconnects, finishes."""
    if not shutil.which("pg_ctlcluster"):
        pytest.fail("pg_ctlcluster is needed to restart PostgreSQL")
    version = sorted(os.listdir("/etc/postgresql"))[0]
    numbers = phones(3000)
    store = await open_store(postgres_url)
    try:
        await enroll(store, numbers)
    finally:
        await store.close()
    config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0, latency_ms=20)
    async with running_fake(config) as fake:
        env = worker_env(postgres_url, fake, DRIPLINE_RATE_PER_S="300")
        worker = await start_worker(env, tmp_path)
        await wait_accepted(fake, 500, 60)
        # In a thread: the fake runs on this event loop and must keep answering (a
        # blocked loop would time the worker's requests out and leave them unknown).
        await asyncio.to_thread(
            subprocess.run,
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        try:
            await wait_accepted(fake, len(numbers), 120)
        except TimeoutError:
            code = await worker.stop()
            pytest.fail(f"worker did not finish (exit {code}): {worker.stderr()[-3000:]}")
        await asyncio.sleep(1.0)
        code = await worker.stop()
        got = received(fake)
    assert code == 0, worker.stderr()[-3000:]
    assert "database unavailable" in worker.stderr()
    assert all(n == 1 for n in got.values())
    store = await open_store(postgres_url)
    try:
        rows = await message_rows(store)
    finally:
        await store.close()
    statuses = Counter(r.status for r in rows)
    assert statuses["sent"] + statuses["unknown"] == len(numbers), statuses


async def test_two_overlapping_once_processes_never_double_send(
    store_url: str, tmp_path: Path
) -> None:
    numbers = phones(1500)
    store = await open_store(store_url)
    try:
        await enroll(store, numbers)
    finally:
        await store.close()
    config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0, latency_ms=10)
    async with running_fake(config) as fake:
        env = worker_env(store_url, fake, DRIPLINE_RATE_PER_S="500")
        procs = [await start_worker(env, tmp_path, "--once", "--json") for _ in range(2)]
        codes = [await p.wait(90) for p in procs]
        got = received(fake)
    for p, code in zip(procs, codes, strict=True):
        assert code == 0, p.stderr()[-2000:]
    assert got == Counter({p: 1 for p in numbers})
