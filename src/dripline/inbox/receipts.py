"""Read receipts: a flow with `read_receipts: true` has each answer marked as read
through the Cloud API, so the user sees blue ticks (`CloudApiClient.mark_read`).

    receipts_for(plan, events, flow_of, wants) -> [ReadReceipt]   pure: which ones
    ReadReceipts(client).submit(receipts)                          I/O: best effort

An answer is a reply the inbox applied to a waiting conversation (it moved the
conversation: the next step, a re-ask), never an opt-out keyword or a message that
answers nothing. Receipts go after the batch's transaction committed, in the
background: a slow or failing Cloud API never holds up the flow; a failure is logged
(Meta's code and message, never the token) and not retried, since a later answer marks
the earlier ones read too (Meta's rule).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from dripline.inbox.plan import InboundEvent, InboundPlan
from dripline.store import OPT_OUT_KIND

__all__ = ["MarksRead", "ReadReceipt", "ReadReceipts", "receipts_for"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    """Mark `wamid` read from `sender`, the business number it was sent to (None: the
    configured one)."""

    wamid: str
    sender: str | None


class MarksRead(Protocol):
    async def mark_read(self, message_id: str, *, sender: str | None = None) -> None: ...

    async def close(self) -> None: ...


def receipts_for(
    plan: InboundPlan,
    events: Mapping[str, InboundEvent],
    flow_of: Mapping[int, str],
    wants: Callable[[str], bool],
) -> list[ReadReceipt]:
    """The answers in `plan` whose flow (`flow_of` conversation id -> flow name) wants
    read receipts, in the order they were recorded."""
    out: list[ReadReceipt] = []
    for row in plan.inserts:
        cid = row.conversation_id
        if row.step is None or row.kind == OPT_OUT_KIND or cid is None or cid not in plan.changes:
            continue
        flow = flow_of.get(cid)
        if flow is None or not wants(flow):
            continue
        event = events.get(row.wamid)
        out.append(ReadReceipt(row.wamid, event.number if event is not None else None))
    return out


class ReadReceipts:
    """Sends read receipts in the background, `concurrency` at a time; beyond
    `max_pending` waiting ones, new ones are dropped (counted, logged once a burst)."""

    def __init__(self, client: MarksRead, *, concurrency: int = 4, max_pending: int = 1_000):
        self.client = client
        self.max_pending = max_pending
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._limit = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, receipts: Sequence[ReadReceipt]) -> None:
        """Queue `receipts` (returns at once)."""
        loop = asyncio.get_running_loop()
        for receipt in receipts:
            if len(self._tasks) >= self.max_pending:
                if self.dropped == 0 or self.dropped % 1_000 == 0:
                    log.warning("inbox.read_receipts_dropped", pending=len(self._tasks))
                self.dropped += 1
                continue
            task = loop.create_task(self._send(receipt), name="dripline-read-receipt")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, receipt: ReadReceipt) -> None:
        async with self._limit:
            try:
                await self.client.mark_read(receipt.wamid, sender=receipt.sender)
            except Exception as exc:  # best effort: nothing may reach the flow
                self.failed += 1
                log.warning(
                    "inbox.read_receipt_failed",
                    error_class=type(exc).__name__,
                    code=getattr(exc, "code", None),
                    error=str(exc)[:200],
                )
            else:
                self.sent += 1

    async def wait(self) -> None:
        """Until every queued receipt was sent or failed (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Let queued receipts finish for up to `timeout_s`, cancel the rest, and close
        the client."""
        try:
            await asyncio.wait_for(self.wait(), timeout_s)
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.client.close()
