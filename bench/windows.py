"""CPU inside a measured window: a process's CPU (utime + stime) read at the window's
boundaries while it runs, so its start-up and shutdown fall outside by construction.

Subtracting a separate start-up run (the "net" figures elsewhere) leaves that run's own
spread in the result: 0.3 s between runs on a loaded machine, which is the whole signal
at 1 msg/s and over an idle minute (issue 14, item 2). A window read from the run itself
has no second run to disagree with.

`window_usage` and `messages_in` are the arithmetic (pure, unit-tested); `read_at` takes
the readings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.machine import proc_cpu_s

__all__ = ["WindowCpu", "messages_in", "read_at", "window_usage"]


@dataclass(frozen=True)
class WindowCpu:
    """CPU seconds used between two readings, and the messages due between them."""

    start: float  # epoch seconds of the first reading
    end: float  # and of the second
    cpu_s: float
    messages: int
    database_cpu_s: float | None = None  # the run's PostgreSQL backends, if read
    # The process's CPU when the window opened: its start-up, if that was over (a
    # figure well under a start-up run's says start-up ran into the window).
    cpu_before_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def ms_per_message(self) -> float | None:
        return self.cpu_s * 1000 / self.messages if self.messages else None

    @property
    def database_ms_per_message(self) -> float | None:
        if self.database_cpu_s is None or not self.messages:
            return None
        return self.database_cpu_s * 1000 / self.messages

    @property
    def core_share(self) -> float:
        """Of one core, over the window."""
        return self.cpu_s / self.seconds

    def as_dict(self) -> dict[str, float | int | None]:
        ms, db = self.ms_per_message, self.database_ms_per_message
        return {
            "seconds": round(self.seconds, 3),
            "cpu_s": round(self.cpu_s, 4),
            "messages": self.messages,
            "ms_per_message": None if ms is None else round(ms, 3),
            "database_ms_per_message": None if db is None else round(db, 3),
            "core_share": round(self.core_share, 5),
            "cpu_before_s": round(self.cpu_before_s, 3),
        }


def window_usage(
    first: tuple[float, float],
    last: tuple[float, float],
    messages: int,
    database: tuple[float, float] | None = None,
) -> WindowCpu:
    """The window between two (epoch, cumulative CPU seconds) readings of one process.

    Raises ValueError for readings that cannot be one process's: out of order in time,
    or its cumulative CPU going down (a reading of another, reused pid)."""
    (t0, c0), (t1, c1) = first, last
    if t1 <= t0:
        raise ValueError(f"window ends ({t1}) before it starts ({t0})")
    if c1 < c0:
        raise ValueError(f"cumulative CPU went down: {c0} -> {c1}")
    db = None
    if database is not None:
        d0, d1 = database
        db = max(0.0, d1 - d0)  # backends that exited take their CPU with them
    return WindowCpu(t0, t1, c1 - c0, messages, db, c0)


def messages_in(due: Iterable[float], start: float, end: float) -> int:
    """How many of the messages due at these epoch times fall in [start, end)."""
    return sum(1 for t in due if start <= t < end)


def _alive(pid: int) -> bool:
    """Running, not a zombie (whose CPU would read as its children's too, or 0)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[1].split()[0] != "Z"


async def read_at(
    pid: int,
    times: Sequence[float],
    database: Callable[[], float] | None = None,
) -> list[tuple[float, float, float | None]]:
    """At each epoch time in `times` (ascending), read `pid`'s CPU seconds (and
    `database()`'s). Returns (epoch read, CPU, database CPU); stops early if the process
    is gone (a reading of a reaped pid would be 0)."""
    out: list[tuple[float, float, float | None]] = []
    for t in times:
        await asyncio.sleep(max(0.0, t - time.time()))
        if not _alive(pid):
            break
        cpu = proc_cpu_s([pid])
        out.append((time.time(), cpu, database() if database is not None else None))
    return out
