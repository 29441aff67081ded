"""An asyncio event loop whose clock is virtual: sleeping costs no real time.

When no callback is ready, the loop jumps its clock to the next timer instead of
waiting (the selector's `select(timeout)` advances time by `timeout`). Everything that
asks the loop for time (`asyncio.sleep`, `asyncio.timeout`, `loop.time()`) sees the
virtual clock, so the real dispatcher and inbox processor run unchanged, and a
simulated hour takes as long as the work done in it.

There is no I/O: a `select` with nothing scheduled and nothing ready means every task
waits for something that can never happen, which is reported as `SimStuck` rather
than hanging. Determinism: callbacks run in FIFO order and timers in (time, insertion)
order, so the same program with the same random seeds runs the same way every time.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

__all__ = ["SimClock", "SimStuck", "TaskTag", "VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")

# Which simulated process a task belongs to: tasks copy their creator's context, so
# every task a worker starts carries its tag (see VirtualTimeLoop.tasks_of).
TaskTag: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dripline_sim_tag", default=None
)


class SimStuck(RuntimeError):
    """Nothing is ready and no timer is scheduled: the simulated system deadlocked."""


class _VirtualSelector:
    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise SimStuck(f"no task can ever run again (virtual t={self._loop.time():.3f}s)")
        if timeout > 0:
            # At least a microsecond: a timer so close that `now + timeout == now` in
            # floating point would otherwise never let time move (real clocks tick).
            self._loop.advance(max(timeout, 1e-6))
        return []

    def close(self) -> None:
        pass


class VirtualTimeLoop(asyncio.BaseEventLoop):
    """A loop with a virtual clock and no I/O (see the module docstring)."""

    def __init__(self, *, max_time_s: float = 1e9) -> None:
        super().__init__()
        self._now = 0.0
        self._max_time_s = max_time_s
        self._selector = _VirtualSelector(self)
        self._tagged: dict[asyncio.Task[Any], str] = {}
        self.expected_exceptions: tuple[type[BaseException], ...] = ()
        self.set_task_factory(cast(Any, self._make_task))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        if self._now > self._max_time_s:
            raise SimStuck(f"virtual time passed its limit of {self._max_time_s:.0f}s")

    # Abstract hooks of BaseEventLoop that only matter for real I/O.
    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def _make_task(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kw: Any
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kw)
        tag = kw["context"].get(TaskTag) if kw.get("context") else TaskTag.get()
        if tag is not None:
            self._tagged[task] = tag
            task.add_done_callback(self._untag)
        return task

    def _untag(self, task: asyncio.Task[Any]) -> None:
        self._tagged.pop(task, None)
        # A process's task that ended because the process was killed is expected;
        # anything else stays unretrieved, so asyncio still reports it.
        if not task.cancelled() and isinstance(task.exception(), self.expected_exceptions):
            return

    def tasks_of(self, tag: str) -> list[asyncio.Task[Any]]:
        """The live tasks a simulated process started, in creation order."""
        return [t for t, owner in self._tagged.items() if owner == tag and not t.done()]


class SimClock:
    """dripline's `Clock` on the loop's virtual time: `now()` is `epoch + loop.time()`."""

    def __init__(self, loop: VirtualTimeLoop, epoch: datetime | None = None) -> None:
        self._loop = loop
        self.epoch = epoch or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=self._loop.time())

    def monotonic(self) -> float:
        return self._loop.time()

    def at(self, seconds: float) -> datetime:
        return self.epoch + timedelta(seconds=seconds)


def run_virtual(main: Callable[[VirtualTimeLoop], Coroutine[Any, Any, T]], **kw: Any) -> T:
    """Run `main(loop)` to completion on a fresh virtual-time loop, then close it."""
    loop = VirtualTimeLoop(**kw)
    try:
        return loop.run_until_complete(main(loop))
    finally:
        try:
            tasks = list(asyncio.all_tasks(loop))
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        finally:
            loop.close()
