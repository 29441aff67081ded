"""`dripline enroll --sender`, `dripline import` with a `sender` column or `--sender`, and
`dripline status --json`'s `senders`, on a real SQLite file (issue 15 item 6)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dripline.cli import app
from dripline.store import WorkerInfo, open_store

A, B = "111111", "222222"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    monkeypatch.setenv("DRIPLINE_WHATSAPP_PHONE_NUMBER_ID", A)
    monkeypatch.setenv("DRIPLINE_SENDERS", f"{B}:300")
    monkeypatch.setenv("DRIPLINE_FLOWS_DIR", str(tmp_path / "flows"))
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "on-b.yaml").write_text(
        f"name: on-b\nsender: {B}\nsteps:\n  - text: hi\n"
    )
    result = CliRunner().invoke(app, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 0, result.output
    return url


def senders_of(url: str) -> dict[str, str | None]:
    async def read() -> dict[str, str | None]:
        store = await open_store(url)
        try:
            snap = await store.snapshot()
            return {f"{c.phone}/{c.flow}": c.sender for c in snap.conversations}
        finally:
            await store.close()

    return asyncio.run(read())


def test_enroll_and_import_choose_the_number(env: str, tmp_path: Path) -> None:
    run = CliRunner().invoke
    ok = ["--database-url", env]
    assert (
        run(
            app, ["enroll", "--flow", "demo", "--phone", "+14155550001", "--sender", B, *ok]
        ).exit_code
        == 0
    )
    assert run(app, ["enroll", "--flow", "demo", "--phone", "+14155550002", *ok]).exit_code == 0
    assert run(app, ["enroll", "--flow", "on-b", "--phone", "+14155550003", *ok]).exit_code == 0
    bad = run(app, ["enroll", "--flow", "demo", "--phone", "+14155550004", "--sender", "999", *ok])
    assert bad.exit_code == 2
    assert "--sender: '999' is not a configured phone number id" in bad.output
    csv = tmp_path / "people.csv"
    csv.write_text(f"phone,sender\n+14155550005,{B}\n+14155550006,\n+14155550007,{A}\n")
    assert run(app, ["import", "--flow", "demo", str(csv), *ok]).exit_code == 0
    assert senders_of(env) == {
        "+14155550001/demo": B,
        "+14155550002/demo": None,
        "+14155550003/on-b": B,  # the flow's
        "+14155550005/demo": B,
        "+14155550006/demo": None,
        "+14155550007/demo": None,  # the default number, named: stored as the default
    }
    csv.write_text("phone,sender\n+14155550008,\n+14155550009,12345\n")
    bad = run(app, ["import", "--flow", "demo", str(csv), "--sender", B, *ok])
    assert bad.exit_code == 2
    assert f"{csv}:3 sender: '12345' is not a configured phone number id" in bad.output
    assert "+14155550008/demo" not in senders_of(env)  # all or nothing


def test_status_shows_each_number(env: str) -> None:
    async def beat() -> None:
        store = await open_store(env)
        try:
            now = datetime.now(UTC)
            for wid, sent in (("w1", 10), ("w2", 5)):
                row = {"rate_per_s": 300.0, "current_per_s": 150.0, "throttled": 1, "errors": 0}
                stats = {"senders": {B: row | {"sent": sent}}}
                info = WorkerInfo(wid, "h", 1, now, now, 150.0, 10, "static", stats)
                await store.heartbeat(info, live_after_s=60)
        finally:
            await store.close()

    asyncio.run(beat())
    result = CliRunner().invoke(app, ["status", "--database-url", env, "--json"])
    assert result.exit_code == 0, result.output
    senders = json.loads(result.stdout)["senders"]
    assert senders == [
        {
            "sender": B,
            "rate_per_s": 300.0,
            "current_per_s": 300.0,
            "sent": 15,
            "throttled": 2,
            "errors": 0,
        }
    ]
    text = CliRunner().invoke(app, ["status", "--database-url", env])
    assert "sender numbers: 1" in text.output
