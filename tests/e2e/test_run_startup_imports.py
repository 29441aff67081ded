"""`dripline run --once` loads only what sending needs, all the way to its first send
(issue 14: start-up under 0.5 s; bench scenario 14 measures it).

`tests/unit/test_cli_imports.py` checks the modules loaded by building the command;
this runs the command itself in a fresh interpreter, one message due at the fake, and
lists what it loaded by the end: imports made at run time (the throughput tier's GET
loaded aiohttp) show here. No timing involved.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from dripline.fake import FakeConfig, running_fake
from dripline.store import open_store
from tests.e2e.test_dispatcher_processes import worker_env
from tests.fixtures.dispatch import TOKEN, enroll, phones, received
from tests.unit.test_cli_imports import NOT_FOR_RUN, loaded

# On SQLite: nothing of PostgreSQL's (its dialect, named by the schema's partial indexes
# and the webhook inserts, loaded for nothing).
NOT_FOR_SQLITE = ("sqlalchemy.dialects.postgresql", "asyncpg")

# `dripline run --once` as cron starts it, then the modules it holds at the end.
SCRIPT = """
import json, sys
from dripline.cli import main
out = sys.argv[1]
sys.argv = ["dripline", "run", "--once"]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


async def test_run_once_sends_without_loading_what_it_does_not_need(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = await open_store(sqlite_url)
    try:
        await enroll(store, phones(1))
    finally:
        await store.close()
    out = tmp_path / "modules.json"
    config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0)
    async with running_fake(config) as fake:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SCRIPT,
            str(out),
            env=worker_env(sqlite_url, fake),
            cwd=tmp_path,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert len(received(fake)) == 1, err.decode()[-2000:]
    result = json.loads(out.read_text())
    assert result["code"] == 0, err.decode()[-2000:]
    assert loaded(set(result["modules"]), (*NOT_FOR_RUN, *NOT_FOR_SQLITE)) == []
