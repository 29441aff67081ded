"""docs/deploy.md followed on this machine: dripline behind PgBouncer in transaction mode,
the local stand-in for Supabase's transaction pooler (port 6543).

PgBouncer comes from Debian (`.ci/run` installs it); the test starts its own with a
temporary config in front of the test PostgreSQL. Where it is missing the test fails in
CI (or with DRIPLINE_TEST_POSTGRES_URL set) and skips elsewhere, like the PostgreSQL tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.engine import make_url

from dripline.fake import FakeConfig, running_fake
from dripline.store import (
    ConversationUpdate,
    Enrollment,
    MessageUpdate,
    Outcome,
    Reservation,
    Store,
    open_store,
)
from dripline.store.types import WorkerInfo
from tests.e2e.test_dispatcher_processes import DRIPLINE, worker_env
from tests.e2e.test_run_serve import free_port
from tests.fixtures.dispatch import TOKEN, phones

pytestmark = pytest.mark.postgres

API_TOKEN = "pgbouncer-test-api-token"


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("/usr/sbin/pgbouncer")
    if found is None:
        message = "pgbouncer is not installed (apt-get install pgbouncer)"
        if os.environ.get("CI") or os.environ.get("DRIPLINE_TEST_POSTGRES_URL"):
            pytest.fail(f"{message}; CI or DRIPLINE_TEST_POSTGRES_URL is set, so this is a failure")
        pytest.skip(message)
    return found


@pytest.fixture
def pgbouncer(postgres_server_url: str) -> Iterator[Callable[[str], str]]:
    """A PgBouncer in transaction mode in front of the test server; yields a function
    that turns a direct database URL into the same database through PgBouncer."""
    binary = _pgbouncer_binary()
    server = make_url(postgres_server_url)
    user = server.username or "postgres"
    port = free_port()
    # Readable by the unprivileged user PgBouncer switches to when started as root.
    folder = Path(tempfile.mkdtemp(prefix="dripline-pgbouncer-"))
    folder.chmod(0o755)
    (folder / "userlist.txt").write_text(f'"{user}" "{server.password or ""}"\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = {'md5' if server.password else 'trust'}\n"
        f"auth_file = {folder / 'userlist.txt'}\n"
        "pool_mode = transaction\n"
        "default_pool_size = 5\nmax_client_conn = 100\n"
    )
    for path in folder.iterdir():
        path.chmod(0o644)
    command = [binary]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        command += ["-u", pwd.getpwnam("postgres").pw_name]
    log = (folder / "pgbouncer.log").open("wb")
    proc = subprocess.Popen(
        [*command, str(folder / "pgbouncer.ini")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert proc.poll() is None, (folder / "pgbouncer.log").read_text()
            time.sleep(0.05)
        else:
            pytest.fail(f"PgBouncer did not listen: {(folder / 'pgbouncer.log').read_text()}")

        def through(url: str) -> str:
            return (
                make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
            )

        yield through
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


async def _dripline(env: dict[str, str], *args: str, timeout_s: float = 60) -> tuple[int, str]:
    """Run a dripline command; (exit code, stdout), with stderr on a failure."""
    proc = await asyncio.create_subprocess_exec(
        DRIPLINE,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    text = out.decode()
    return proc.returncode, text if proc.returncode == 0 else text + err.decode()


async def _wait_healthy(
    http: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process
) -> None:
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            assert proc.returncode is None, "dripline serve exited"
            await asyncio.sleep(0.2)


async def test_serve_run_once_and_status_behind_a_transaction_pooler(
    empty_postgres_url: str, pgbouncer: Callable[[str], str], tmp_path: Path
) -> None:
    """Migrations over the direct connection, everything else through the pooler with
    `db_pooler`: enrollment over HTTP, a `run --once` that sends, `status` and `export`."""
    pooled = pgbouncer(empty_postgres_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0, latency_ms=5)
    async with running_fake(config) as fake:
        direct_env = worker_env(empty_postgres_url, fake)
        code, out = await _dripline(direct_env, "db", "upgrade")
        assert code == 0, out

        env = worker_env(
            pooled,
            fake,
            DRIPLINE_DB_POOLER="true",
            DRIPLINE_API_TOKEN=API_TOKEN,
            DRIPLINE_PORT=str(port),
            DRIPLINE_FLOWS_DIR=str(tmp_path / "flows"),
        )
        log = (tmp_path / "serve.log").open("wb")
        server = await asyncio.create_subprocess_exec(
            DRIPLINE, "serve", env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {API_TOKEN}"}
            ) as http:
                await _wait_healthy(http, base, server)
                body = [{"phone": f"+1415555{i:04d}", "flow": "demo"} for i in range(5)]
                async with http.post(f"{base}/v1/conversations", json=body) as r:
                    assert r.status == 201, await r.text()
                # A retry of the same request through the pooler: idempotent.
                async with http.post(f"{base}/v1/conversations", json=body[0]) as r:
                    assert r.status == 200, await r.text()
        finally:
            server.send_signal(signal.SIGTERM)
            await asyncio.wait_for(server.wait(), 20)
            log.close()
        # SIGTERM is a clean stop: exit code 0 (tests/e2e/test_serve_sigterm.py).
        assert server.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]

        code, out = await _dripline(env, "run", "--once", "--json", "--max-seconds", "30")
        assert code == 0, out
        assert json.loads(out)["sent"] == 5, out
        assert sorted(m.to for m in fake.state.messages) == [f"1415555{i:04d}" for i in range(5)]

    # Twice: a second client on the same server session is where asyncpg's named
    # statements would collide without `pooler`.
    for _ in range(2):
        code, out = await _dripline(env, "status", "--json")
        assert code == 0, out
        assert json.loads(out)["conversations"]["in_progress"] == 5, out
        code, out = await _dripline(env, "export", "--flow", "demo", "-")
        assert code == 0, out
        assert len(out.splitlines()) == 1 + 5, out


async def test_db_commands_behind_a_transaction_pooler(
    empty_postgres_url: str, pgbouncer: Callable[[str], str]
) -> None:
    """`db upgrade` and `db current` through the pooler with `db_pooler`, each a new
    client on a server connection an earlier one used (asyncpg's default statement
    names collided there: "prepared statement __asyncpg_stmt_1__ already exists"),
    and two upgrades at once (they take turns on an advisory lock)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPLINE_")}
    env.update(DRIPLINE_DATABASE_URL=pgbouncer(empty_postgres_url), DRIPLINE_DB_POOLER="true")
    for command in (("db", "upgrade"), ("db", "current"), ("db", "upgrade")):
        code, out = await _dripline(env, *command)
        assert code == 0, out
    both = await asyncio.gather(*(_dripline(env, "db", "upgrade", "--json") for _ in range(2)))
    assert [code for code, _ in both] == [0, 0], both


async def test_the_dispatchers_hot_path_behind_a_transaction_pooler(
    postgres_url: str, pgbouncer: Callable[[str], str]
) -> None:
    """Eight stores with `pooler` (more clients than PgBouncer's 5 server sessions),
    their claims, reservations, records, lease extensions and heartbeats interleaved:
    PostgreSQL's lane prepares nothing by name, so a statement is never looked for in
    another client's server session (with asyncpg's statement cache on, this fails:
    "prepared statement __asyncpg_stmt_3d__ does not exist"). Each call also runs in a
    transaction, so an unnamed parse and its execution reach the same server session;
    this test did not catch that one undone (the gap between the two is short)."""
    pooled = pgbouncer(postgres_url)
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    stores = [await open_store(pooled, pooler=True, pool_size=1) for _ in range(8)]
    try:
        await stores[0].enroll([Enrollment(p, "f", at=now) for p in phones(80)], now)

        async def dispatch(store: Store, worker: str) -> int:
            sent = 0
            for k in range(80):
                at = now + timedelta(seconds=k)
                claim = await store.claim_next(2, 60, worker, at)
                convs = claim.conversations
                if not convs:
                    if claim.next_due_at is None:
                        return sent  # the others hold the rest
                    continue
                assert await store.extend_leases([c.id for c in convs], worker, 60, at) == sorted(
                    c.id for c in convs
                )
                items = [Reservation(c.id, c.step, c.purpose, c.next_send_at) for c in convs]
                results = await store.reserve(items, worker, at)
                assert all(r.ok for r in results)
                outcomes = [
                    Outcome(
                        ConversationUpdate(c.id, "completed", c.step, c.purpose, None, 1),
                        MessageUpdate(r.message_id, "sent", wamid=f"wamid.{r.message_id}"),
                    )
                    for c, r in zip(convs, results, strict=True)
                ]
                assert await store.record_results(outcomes, worker, at) == len(convs)
                info = WorkerInfo(worker, "host", 1, now, at, 10.0, 5, "static")
                assert worker in {w.id for w in await store.heartbeat(info, live_after_s=30)}
                sent += len(convs)
            return sent

        sent = await asyncio.gather(*(dispatch(s, f"w{i}") for i, s in enumerate(stores)))
        assert sum(sent) == 80
        snap = await stores[0].snapshot()
        assert sorted(m.status for m in snap.messages) == ["sent"] * 80
        assert {c.state for c in snap.conversations} == {"completed"}
    finally:
        for store in stores:
            await store.close()
