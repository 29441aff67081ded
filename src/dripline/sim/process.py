"""Simulated processes and what they see of the database.

A `SimProcess` is a worker or the server. Killing one is a crash, not a shutdown: its
tasks are cancelled and, from that instant, every database or HTTP call it makes raises
`Killed` before touching the world, so no `finally` block or shielded cleanup can write
anything (a real SIGKILL runs no code at all). Work the process had already handed to
the world stays done: a committed transaction stays committed, a request already
written is still handled by the API.

`StoreView` is one process's connection to the shared store: it injects latency,
database outages (every process) and stalls (one process's calls hang, so its leases
lapse while it still believes it holds them).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable
from typing import Any

from dripline.errors import DatabaseUnavailable, TransientStoreError
from dripline.sim.loop import TaskTag, VirtualTimeLoop

__all__ = ["Killed", "SimProcess", "StoreView"]


class Killed(BaseException):
    """The simulated process was killed: nothing it does reaches the world any more.

    A BaseException so that `except Exception` handlers in the code under test cannot
    swallow it and carry on as if alive."""


class SimProcess:
    """A named process that can be started, killed and restarted."""

    def __init__(self, name: str, loop: VirtualTimeLoop) -> None:
        self.name = name
        self.generation = 0
        self.alive = False
        self._loop = loop

    @property
    def tag(self) -> str:
        return f"{self.name}#{self.generation}"

    def start(self) -> str:
        self.generation += 1
        self.alive = True
        return self.tag

    def check(self, tag: str) -> None:
        if not self.alive or tag != self.tag:
            raise Killed(tag)

    async def kill(self) -> None:
        """Crash: every task of this generation is cancelled until none is left."""
        self.alive = False
        tag = self.tag
        for _ in range(100):
            tasks = self._loop.tasks_of(tag)
            if not tasks:
                return
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        raise RuntimeError(f"tasks of {tag} would not die")

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Start a task that belongs to this process's current generation."""
        token = TaskTag.set(self.tag)
        try:
            task = asyncio.get_running_loop().create_task(coro, name=f"{self.tag}:{name}")
        finally:
            TaskTag.reset(token)
        return task


class Faults:
    """Database outages and stalls, by virtual time."""

    def __init__(
        self,
        loop: VirtualTimeLoop,
        rng: random.Random,
        *,
        latency_s: float,
        outages: list[tuple[float, float]],
        stalls: dict[str, list[tuple[float, float]]],
        p_tx_refused: float = 0.0,
        refusal_rng: random.Random | None = None,
    ) -> None:
        self._loop = loop
        self._rng = rng
        self._p_refused = p_tx_refused
        self._refusal_rng = refusal_rng or random.Random(0)
        self._latency_s = latency_s
        self._outages = outages
        self._stalls = stalls

    def stall_until(self, process: str) -> float | None:
        now = self._loop.time()
        for start, end in self._stalls.get(process, ()):
            if start <= now < end:
                return end
        return None

    def in_outage(self) -> bool:
        now = self._loop.time()
        return any(start <= now < end for start, end in self._outages)

    def latency(self) -> float:
        return self._rng.uniform(0.0, 2 * self._latency_s)

    def tx_refused(self) -> bool:
        """Whether the database refuses this commit for a retry (a deadlock)."""
        return self._p_refused > 0 and self._refusal_rng.random() < self._p_refused


class StoreView:
    """One process's view of the shared store (see the module docstring).

    Every public coroutine method of the store is wrapped: stall, check alive, fail in
    an outage, latency, the call itself (atomic in the in-memory store), latency back,
    check alive again (a process killed meanwhile never sees the answer).
    """

    def __init__(
        self, store: Any, process: SimProcess, faults: Faults, *, batch_delay_s: float = 0.0
    ) -> None:
        self._store = store
        self._process = process
        self._faults = faults
        self._tag = process.tag
        self._batch_delay_s = batch_delay_s

    def webhook_transaction(self) -> _TxView:
        """The inbox processor's batch transaction, under the same faults; a killed
        process's transaction rolls back (its task is cancelled inside it)."""
        return _TxView(self, self._store.webhook_transaction(), self._batch_delay_s)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if name.startswith("_") or not asyncio.iscoroutinefunction(target):
            return target
        return functools.partial(self._call, name, target)

    async def _call(self, name: str, target: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        await self._before(name)
        result = await target(*args, **kw)
        await self._after()
        return result

    async def _before(self, name: str) -> None:
        faults = self._faults
        until = faults.stall_until(self._process.name)
        if until is not None:
            await asyncio.sleep(until - asyncio.get_running_loop().time())
        self._process.check(self._tag)
        await asyncio.sleep(faults.latency())
        self._process.check(self._tag)
        if faults.in_outage():
            raise DatabaseUnavailable(f"simulated database outage ({name})")

    async def _after(self) -> None:
        await asyncio.sleep(self._faults.latency())
        self._process.check(self._tag)
        if self._faults.in_outage():
            # The outage began while the call was under way: it committed, but the
            # answer was lost (the caller cannot tell, and will retry).
            raise DatabaseUnavailable("simulated database outage (the answer was lost)")


class _TxView:
    def __init__(self, view: StoreView, cm: Any, delay_s: float) -> None:
        self._view = view
        self._cm = cm
        self._delay_s = delay_s

    async def __aenter__(self) -> Any:
        if self._delay_s:
            await asyncio.sleep(self._delay_s)  # a slow processor: each batch takes long
        await self._view._before("webhook_transaction")
        tx = await self._cm.__aenter__()
        return _TxProxy(tx, self._view)

    async def __aexit__(self, *exc: Any) -> Any:
        if exc[0] is None:
            try:
                self._view._process.check(self._view._tag)
            except Killed as killed:  # died before commit: roll back
                await self._cm.__aexit__(Killed, killed, None)
                raise
            if self._view._faults.tx_refused():  # the database asks for a retry
                refused = TransientStoreError("simulated deadlock: retry the transaction")
                await self._cm.__aexit__(TransientStoreError, refused, None)
                raise refused
        return await self._cm.__aexit__(*exc)


class _TxProxy:
    def __init__(self, tx: Any, view: StoreView) -> None:
        self._tx = tx
        self._view = view

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._tx, name)
        if name.startswith("_") or not asyncio.iscoroutinefunction(target):
            return target
        view = self._view

        async def call(*args: Any, **kw: Any) -> Any:
            view._process.check(view._tag)
            result = await target(*args, **kw)
            view._process.check(view._tag)
            return result

        return call
