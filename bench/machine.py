"""What the shared machine was doing: the planner's CPU inputs that are not ours.

Before a run, `sample_others` watches the machine for a moment while none of the run's
processes exist yet (the fake is idle): how many cores the other work used, and the CFS
weight of the tasks it kept runnable. The planner turns that into the cores the run
can expect (`dripline.planner.available_cores`), so the prediction is fed the
machine's state from before the run, not anything the run measured.

During a run, `CpuTrace` keeps cumulative CPU seconds of the run's processes (the
dispatchers, PostgreSQL's server processes, the fake) and of the whole machine at each
of the harness's polls, with the messages accepted so far: CPU per message over the
steady part of a run (10% to 90% of the messages), start-up and shutdown left out, and
how much of the machine was idle meanwhile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from dripline.planner import nice_weight

__all__ = ["CpuTrace", "MachineLoad", "Steady", "machine_busy_s", "proc_cpu_s", "sample_others"]

_HZ = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def machine_busy_s() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot (/proc/stat; iowait is
    idle: a core waiting on I/O could run something else)."""
    with open("/proc/stat") as fh:
        parts = fh.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    busy = user + nice + system + irq + softirq + steal
    return busy / _HZ, (idle + iowait) / _HZ


def proc_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) used so far by these processes, 0 for gone ones."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _runnable_weight(exclude: set[int]) -> float:
    """Sum of the CFS weights of the tasks (threads) running or runnable right now."""
    total = 0.0
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*/stat"):
        try:
            text = task.read_text()
        except OSError:
            continue
        # pid (comm) state ...: comm may hold spaces and parentheses, so split after it.
        rest = text[text.rfind(")") + 2 :].split()
        if rest[0] != "R" or int(task.parents[2].name) in exclude:
            continue
        total += nice_weight(int(rest[16]))  # field 19, nice
    return total


@dataclass(frozen=True)
class MachineLoad:
    """The other work on the machine, before a run."""

    cores: int
    others_busy_cores: float
    others_weight: float
    loadavg: tuple[float, float, float]
    our_nice: int
    window_s: float

    def describe(self) -> str:
        one, five, _ = self.loadavg
        return (
            f"before the run: others used {self.others_busy_cores:.2f} of {self.cores} cores, "
            f"runnable weight {self.others_weight:.0f} (nice 0 = 1024), load avg "
            f"{one:.1f}/{five:.1f}; ours at nice {self.our_nice}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "cores": self.cores,
            "others_busy_cores": round(self.others_busy_cores, 3),
            "others_weight": round(self.others_weight, 1),
            "loadavg": [round(x, 2) for x in self.loadavg],
            "our_nice": self.our_nice,
            "window_s": self.window_s,
        }


def sample_others(ours: Iterable[int], window_s: float = 1.0) -> MachineLoad:
    """Watch the machine for `window_s` (blocking; the run has not started): the cores
    used by everything but `ours` (the harness and the fake) and the runnable weight of
    everything else, averaged over ten looks."""
    mine = {os.getpid(), *ours}
    busy0, _ = machine_busy_s()
    ours0 = proc_cpu_s(mine)
    t0 = time.monotonic()
    weights = []
    for _ in range(10):
        weights.append(_runnable_weight(mine))
        time.sleep(window_s / 10)
    wall = time.monotonic() - t0
    busy1, _ = machine_busy_s()
    ours1 = proc_cpu_s(mine)
    others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / wall
    return MachineLoad(
        cores=CORES,
        others_busy_cores=min(float(CORES), others),
        others_weight=sum(weights) / len(weights),
        loadavg=os.getloadavg(),
        our_nice=os.nice(0),
        window_s=round(wall, 2),
    )


@dataclass(frozen=True)
class Steady:
    """CPU per message over the steady part of a run, and the machine meanwhile."""

    messages: int
    seconds: float
    dispatcher_ms: float
    database_ms: float | None
    api_ms: float
    machine_busy_cores: float
    machine_idle_cores: float

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "dispatcher_ms": round(self.dispatcher_ms, 4),
            "database_ms": None if self.database_ms is None else round(self.database_ms, 4),
            "api_ms": round(self.api_ms, 4),
            "machine_busy_cores": round(self.machine_busy_cores, 3),
            "machine_idle_cores": round(self.machine_idle_cores, 3),
        }

    def describe(self) -> str:
        db = f" + PG {self.database_ms:.3f}" if self.database_ms is not None else ""
        return (
            f"dispatchers {self.dispatcher_ms:.3f}{db} + fake {self.api_ms:.3f} ms/msg over "
            f"{self.messages:,} msgs in {self.seconds:.1f} s"
        )


@dataclass
class CpuTrace:
    """Cumulative CPU at each poll: (wall, accepted, dispatchers, postgres, fake,
    machine busy, machine idle), seconds."""

    samples: list[tuple[float, int, float, float | None, float, float, float]] = field(
        default_factory=list
    )

    def add(self, accepted: int, dispatchers: float, postgres: float | None, fake: float) -> None:
        busy, idle = machine_busy_s()
        self.samples.append((time.time(), accepted, dispatchers, postgres, fake, busy, idle))

    def steady(self, expected: int, lo: float = 0.1, hi: float = 0.9) -> Steady | None:
        """From the first poll with `lo` of `expected` accepted to the first with `hi`:
        None if the run never got there or the window holds too few messages."""
        first = next((s for s in self.samples if s[1] >= lo * expected), None)
        last = next((s for s in self.samples if s[1] >= hi * expected), None)
        if first is None or last is None or last[1] - first[1] < 10 or last[0] <= first[0]:
            return None
        n = last[1] - first[1]
        wall = last[0] - first[0]
        db = None if first[3] is None or last[3] is None else (last[3] - first[3]) * 1000 / n
        return Steady(
            messages=n,
            seconds=wall,
            dispatcher_ms=(last[2] - first[2]) * 1000 / n,
            database_ms=db,
            api_ms=(last[4] - first[4]) * 1000 / n,
            machine_busy_cores=(last[5] - first[5]) / wall,
            machine_idle_cores=(last[6] - first[6]) / wall,
        )
