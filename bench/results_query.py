"""Time `Store.flow_results` on one flow of N conversations (issue 15's results).

    python -m bench.results_query sqlite:////tmp/results.db 100000
    python -m bench.results_query postgresql://postgres@127.0.0.1:5432/results_bench 100000

Fills an empty database (migrated here) with N conversations of flow `big`, two steps
asked each (statuses sent/delivered/read), 80% answered per step with a typed answer
(an option at step 0, a 0-10 number at step 1), 10% of those after an invalid reply,
then times three reads of the results.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from dripline.store import migrate_database, open_store
from dripline.store.schema import conversations, inbound_messages, messages

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NO_ANSWER = {"answer_kind": None, "answer_option": None, "answer_number": None}


def _rows(ids: range, rng: random.Random) -> tuple[list[Any], list[Any], list[Any]]:
    convs, msgs, inbound = [], [], []
    for i in ids:
        convs.append(
            {"id": i, "phone": f"+1415{i:07d}", "flow": "big", "step": 2, "state": "completed",
             "purpose": "question", "created_at": T0, "updated_at": T0}
        )  # fmt: skip
        for step in (0, 1):
            asked = T0 + timedelta(days=step)
            status = rng.choice(("sent", "delivered", "read", "read"))
            msgs.append(
                {"conversation_id": i, "step": step, "purpose": "question", "status": status,
                 "wamid": f"w{i}.{step}", "sent_at": asked, "created_at": T0, "updated_at": T0}
            )  # fmt: skip
            if rng.random() >= 0.8:
                continue
            base = {"conversation_id": i, "phone": "+1", "step": step, "kind": "text"}
            if rng.random() < 0.1:
                inbound.append(
                    {**base, **NO_ANSWER, "wamid": f"bad{i}.{step}", "body": "x", "valid": False,
                     "received_at": asked + timedelta(seconds=30)}
                )  # fmt: skip
            inbound.append(
                {**base, "wamid": f"in{i}.{step}", "body": "y", "valid": True,
                 "received_at": asked + timedelta(seconds=rng.randint(5, 5000)),
                 "answer_kind": "option" if step == 0 else "number",
                 "answer_option": rng.choice(("yes", "no")) if step == 0 else None,
                 "answer_number": float(rng.randint(0, 10)) if step == 1 else None}
            )  # fmt: skip
    return convs, msgs, inbound


async def main(url: str, n: int) -> None:
    await migrate_database(url)
    store = await open_store(url, pool_size=2)
    rng = random.Random(1)
    try:
        async with store._engine.begin() as conn:  # type: ignore[attr-defined]
            for start in range(0, n, 5_000):
                convs, msgs, inbound = _rows(range(start + 1, min(n, start + 5_000) + 1), rng)
                await conn.execute(insert(conversations), convs)
                await conn.execute(insert(messages), msgs)
                await conn.execute(insert(inbound_messages), inbound)
        for _ in range(3):
            began = time.perf_counter()
            found = await store.flow_results("big")
            took = time.perf_counter() - began
            print(
                f"{store.backend} {n:,} conversations: flow_results {took:.2f} s; {found.steps[0]}"
            )
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
