"""A long drain through the store alone, with PostgreSQL's own counters (issue 14).

Scenario 15's rate per 10 s is wall-clock, at the mercy of a shared machine. This probe
drives the dispatcher's statements without the dispatcher (claim 200, reserve them,
record them in two batches of 100) on a fresh database, and reports per window of sends
what does not depend on load: the rows read by sequential scans of `conversations` and
`messages` per message (`pg_stat_user_tables`), the buffers of the claim's due-index
scan (EXPLAIN), and the CPU per message of the database backends serving the store
(from /proc: the server must run on this machine; 0 otherwise).

    python -m bench.drain_probe --url postgresql://postgres@127.0.0.1:5432/probe -n 50000

The database named in the URL is dropped and created again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bench import bulk
from dripline.store import migrate_database, open_store
from dripline.store.types import ConversationUpdate, MessageUpdate, Outcome, Reservation

_DUE = """EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
SELECT id FROM conversations WHERE state IN ('pending', 'in_progress', 'awaiting_reply')
AND next_send_at <= $1 AND (lease_expires_at IS NULL OR lease_expires_at < $1)
ORDER BY next_send_at LIMIT 200"""
_SEQ = """SELECT relname, coalesce(seq_tup_read, 0) FROM pg_stat_user_tables
WHERE relname IN ('conversations', 'messages') ORDER BY relname"""


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def _sample(probe: Any, database: str, sent: int) -> dict[str, float]:
    pids = [
        r[0]
        for r in await probe.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    ]
    await asyncio.sleep(1.2)  # idle backends report their statistics within a second
    seq = {r[0]: int(r[1]) for r in await probe.fetch(_SEQ)}
    plan = json.loads(await probe.fetchval(_DUE, datetime.now(UTC)))[0]["Plan"]
    return {
        "sent": sent,
        "conv_seq_rows": seq.get("conversations", 0),
        "msg_seq_rows": seq.get("messages", 0),
        "due_buffers": plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0),
        "server_cpu_s": _cpu_s(pids),
    }


async def probe_drain(url: str, n: int, every: int) -> list[dict[str, float]]:
    """Drain `n` due conversations; one row per `every` sends."""
    database = make_url(url).database
    assert database, url
    admin = await asyncpg.connect(bulk.pg_dsn(url).rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    await migrate_database(url)
    await bulk.load_conversations(url, n, n, 0)
    store = await open_store(url, pool_size=2)
    probe = await asyncpg.connect(bulk.pg_dsn(url))
    rows: list[dict[str, float]] = []
    sent = 0
    try:
        last = await _sample(probe, database, 0)
        while True:
            now = datetime.now(UTC)
            claimed = await store.claim_due(200, 60, "probe", now)
            if not claimed:
                break
            items = [Reservation(c.id, c.step, c.purpose, c.next_send_at) for c in claimed]
            reserved = await store.reserve(items, "probe", now)
            done = now + timedelta(milliseconds=20)
            for i in range(0, len(claimed), 100):
                outcomes = [
                    Outcome(
                        ConversationUpdate(
                            c.id, "in_progress", 1, "question", now + timedelta(days=1), 0
                        ),
                        MessageUpdate(r.message_id, "sent", wamid=f"wamid.{c.id}", sent_at=done),
                    )
                    for c, r in zip(claimed[i : i + 100], reserved[i : i + 100], strict=True)
                ]
                await store.record_results(outcomes, "probe", done)
            sent += len(claimed)
            if sent % every == 0 or len(claimed) < 200:
                cur = await _sample(probe, database, sent)
                d = cur["sent"] - last["sent"]
                rows.append(
                    {
                        "from": last["sent"],
                        "to": cur["sent"],
                        "conv_seq_rows_per_msg": (cur["conv_seq_rows"] - last["conv_seq_rows"]) / d,
                        "msg_seq_rows_per_msg": (cur["msg_seq_rows"] - last["msg_seq_rows"]) / d,
                        "due_scan_buffers": cur["due_buffers"],
                        "server_cpu_ms_per_msg": (cur["server_cpu_s"] - last["server_cpu_s"])
                        * 1000
                        / d,
                    }
                )
                last = cur
    finally:
        await store.close()
        await probe.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    """A drain through the store, with PostgreSQL's counters per window of sends."""
    parser = argparse.ArgumentParser(prog="python -m bench.drain_probe", description=main.__doc__)
    parser.add_argument("--url", required=True, help="a PostgreSQL database, dropped first")
    parser.add_argument("-n", type=int, default=50_000, help="conversations due at once")
    parser.add_argument("--every", type=int, default=5_000, help="sends per row (x 200)")
    args = parser.parse_args(argv)
    for row in asyncio.run(probe_drain(args.url, args.n, args.every)):
        print(
            f"sends {row['from']:>9,.0f}-{row['to']:<9,.0f} seq rows/msg: conversations "
            f"{row['conv_seq_rows_per_msg']:7.1f}, messages {row['msg_seq_rows_per_msg']:7.1f}; "
            f"due scan {row['due_scan_buffers']:4.0f} buffers; "
            f"database CPU {row['server_cpu_ms_per_msg']:.3f} ms/msg"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
