"""What the shared machine was doing: the planner's CPU inputs that are not ours.

Before a run, `sample_others` watches the machine for a moment while none of the run's
processes exist yet (the fake is idle): how many cores the other work used, how much of
that at a higher priority (a lower nice) than the benchmark's, and how many tasks at its
priority or lower were runnable. The planner turns that into the cores the run
can expect (`dripline.planner.available_cores`), so the prediction is fed the
machine's state from before the run, not anything the run measured.

During a run, `CpuTrace` keeps cumulative CPU seconds of the run's processes (the
dispatchers, the PostgreSQL backends serving the run's database, the fake) and of the
whole machine at each of the harness's polls, with the messages accepted so far: CPU
per message over the steady part of a run (10% to 90% of the messages), start-up and
shutdown left out, and how much of the machine was idle meanwhile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = [
    "CpuTrace",
    "MachineLoad",
    "Steady",
    "machine_busy_s",
    "proc_cpu_s",
    "runnable_threads",
    "sample_others",
]

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


def _stat_fields(path: Path) -> list[str] | None:
    """The fields of a /proc stat file after `pid (comm)`: [0] is field 3 (state)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses, so split after its closing one.
    return text[text.rfind(")") + 2 :].split()


def _process_cpu(exclude: set[int]) -> dict[int, tuple[float, int]]:
    """CPU seconds so far and nice, per process not in `exclude`."""
    out = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        pid = int(path.parent.name)
        f = _stat_fields(path)
        if pid in exclude or f is None:
            continue
        out[pid] = ((int(f[11]) + int(f[12])) / _HZ, int(f[16]))  # utime, stime; nice
    return out


def runnable_threads(pids: Iterable[int]) -> int:
    """Threads of these processes running or runnable now."""
    n = 0
    for pid in pids:
        for path in Path(f"/proc/{pid}/task").glob("[0-9]*/stat"):
            f = _stat_fields(path)
            n += f is not None and f[0] == "R"
    return n


def _runnable_peers(exclude: set[int], our_nice: int) -> int:
    """Tasks (threads) running or runnable now at our nice or a higher one."""
    n = 0
    for path in Path("/proc").glob("[0-9]*/task/[0-9]*/stat"):
        f = _stat_fields(path)
        if f is None or f[0] != "R" or int(path.parents[2].name) in exclude:
            continue
        n += int(f[16]) >= our_nice
    return n


@dataclass(frozen=True)
class MachineLoad:
    """The other work on the machine, before a run."""

    cores: int
    others_busy_cores: float
    priority_busy_cores: float
    peer_tasks: float
    loadavg: tuple[float, float, float]
    our_nice: int
    window_s: float

    def describe(self) -> str:
        one, five, _ = self.loadavg
        return (
            f"before the run: others used {self.others_busy_cores:.2f} of {self.cores} cores, "
            f"{self.priority_busy_cores:.2f} of them at a higher priority than ours (nice "
            f"{self.our_nice}), {self.peer_tasks:.1f} tasks runnable at ours; load avg "
            f"{one:.1f}/{five:.1f}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "cores": self.cores,
            "others_busy_cores": round(self.others_busy_cores, 3),
            "priority_busy_cores": round(self.priority_busy_cores, 3),
            "peer_tasks": round(self.peer_tasks, 2),
            "loadavg": [round(x, 2) for x in self.loadavg],
            "our_nice": self.our_nice,
            "window_s": self.window_s,
        }


def sample_others(ours: Iterable[int], window_s: float = 1.0) -> MachineLoad:
    """Watch the machine for `window_s` (blocking; the run has not started): the cores
    used by everything but `ours` (the harness and the fake), the part of them used by
    processes at a lower nice than ours, and how many tasks at our nice or above were
    runnable (ten looks, averaged)."""
    mine = {os.getpid(), *ours}
    our_nice = os.nice(0)
    busy0, _ = machine_busy_s()
    ours0 = proc_cpu_s(mine)
    procs0 = _process_cpu(mine)
    t0 = time.monotonic()
    peers = []
    for _ in range(10):
        peers.append(_runnable_peers(mine, our_nice))
        time.sleep(window_s / 10)
    wall = time.monotonic() - t0
    busy1, _ = machine_busy_s()
    ours1 = proc_cpu_s(mine)
    procs1 = _process_cpu(mine)
    others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / wall
    # A process born in between counts from its start.
    priority = sum(
        cpu - procs0.get(pid, (0.0, nice))[0]
        for pid, (cpu, nice) in procs1.items()
        if nice < our_nice
    )
    return MachineLoad(
        cores=CORES,
        others_busy_cores=min(float(CORES), others),
        priority_busy_cores=min(float(CORES), max(0.0, priority) / wall),
        peer_tasks=sum(peers) / len(peers),
        loadavg=os.getloadavg(),
        our_nice=our_nice,
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
    # Threads of the run's processes running or runnable, on average over the polls:
    # how many tasks the scheduler shared the cores with on the run's behalf.
    our_runnable: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "our_runnable": None if self.our_runnable is None else round(self.our_runnable, 2),
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
    """Cumulative CPU at each poll: (wall, accepted, dispatchers, the run's database
    backends, fake, machine busy, machine idle), seconds. `database` reads the run's
    own backends' CPU (None: SQLite, inside the dispatcher)."""

    database: Callable[[], float] | None = None
    backends: Callable[[], Iterable[int]] = tuple
    samples: list[tuple[float, int, float, float | None, float, float, float]] = field(
        default_factory=list
    )
    runnable: list[tuple[int, int]] = field(default_factory=list)  # (accepted, threads)

    def add(self, accepted: int, dispatchers: float, fake: float, ours: Iterable[int] = ()) -> None:
        busy, idle = machine_busy_s()
        db = self.database() if self.database is not None else None
        self.samples.append((time.time(), accepted, dispatchers, db, fake, busy, idle))
        self.runnable.append((accepted, runnable_threads(ours)))

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
        seen = [k for a, k in self.runnable if first[1] <= a <= last[1]]
        return Steady(
            messages=n,
            seconds=wall,
            dispatcher_ms=(last[2] - first[2]) * 1000 / n,
            database_ms=db,
            api_ms=(last[4] - first[4]) * 1000 / n,
            machine_busy_cores=(last[5] - first[5]) / wall,
            machine_idle_cores=(last[6] - first[6]) / wall,
            our_runnable=sum(seen) / len(seen) if seen else None,
        )
