"""The planner's CPU term: messages a second are bounded by cores / CPU per message.

Slots, tokens and latency say what the dispatcher could send if CPU were free. On a
machine where the dispatcher, the database and (in the benchmarks) the API share a few
cores, CPU binds first: scenario 15's drain at 2,000/s or scenario 21's 4 x 500/s on 2
cores (bench/README.md, "The CPU budget"). The bound here is

    min(cores / (dispatcher + database + API CPU per message),
        workers x cores_per_worker / dispatcher CPU per message)

the second term because a worker is one event loop: it uses at most about one core
whatever the machine has.

Nothing here is a default measured on someone's machine: every cost is an input, and the
planner applies no CPU bound at all unless it is given one. Figures measured on this
project's 2-core benchmark machine, for orientation (bench/README.md): dispatcher
0.35-0.45 ms per message at 1,000-2,000/s (scenarios 1, 20, 21; net of start-up),
PostgreSQL 0.15-0.36 ms, the fake Cloud API 0.21-0.30 ms; at a trickle (scenario 13,
10-33/s) a message costs 2-7 ms, so a cost measured at one rate does not carry to
another.

`available_cores` is the share of a shared machine such a set of processes can expect,
from what the other processes on it were doing (pure: the caller measures).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CpuBudget", "available_cores"]


@dataclass(frozen=True, slots=True)
class CpuBudget:
    """CPU per message sent, in milliseconds, and the cores that pay for it.

    `dispatcher_ms`: all dispatcher processes together, per message (their CPU time
    over the messages they sent, start-up excluded). `database_ms` and `api_ms`: the
    database server's and the API's, when they run on the same cores (0: elsewhere).
    `cores`: what these processes may use together (a whole machine, or what other work
    leaves of it: `available_cores`). `workers`: dispatcher processes, each using at
    most `cores_per_worker` (one event loop; SQLite's store thread can add a little).
    """

    dispatcher_ms: float
    cores: float
    database_ms: float = 0.0
    api_ms: float = 0.0
    workers: int = 1
    cores_per_worker: float = 1.0
    source: str = ""

    def __post_init__(self) -> None:
        if not self.dispatcher_ms > 0:
            raise ValueError("dispatcher CPU per message must be positive")
        if not self.cores > 0:
            raise ValueError("cores must be positive")
        if self.database_ms < 0 or self.api_ms < 0:
            raise ValueError("CPU per message cannot be negative")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not self.cores_per_worker > 0:
            raise ValueError("cores per worker must be positive")

    @property
    def total_ms(self) -> float:
        """CPU per message of everything on these cores."""
        return self.dispatcher_ms + self.database_ms + self.api_ms

    def machine_limit_per_s(self) -> float:
        """Messages a second the cores can pay for."""
        return self.cores * 1000.0 / self.total_ms

    def worker_limit_per_s(self) -> float:
        """Messages a second the workers' event loops can run, a core each at most."""
        usable = min(self.cores, self.workers * self.cores_per_worker)
        return usable * 1000.0 / self.dispatcher_ms

    def limit_per_s(self) -> float:
        """The CPU bound on messages a second: the smaller of the two."""
        return min(self.machine_limit_per_s(), self.worker_limit_per_s())

    def binding(self) -> str:
        """Which CPU term binds, for the planner's `binding` column."""
        if self.worker_limit_per_s() < self.machine_limit_per_s():
            return "CPU (a core per worker)"
        return "CPU (cores)"

    def describe(self) -> str:
        """E.g. `0.4+0.3+0.25 ms/msg on 2 cores, 1 worker`."""
        parts = [f"{self.dispatcher_ms:g}"]
        if self.database_ms or self.api_ms:
            parts += [f"{self.database_ms:g}", f"{self.api_ms:g}"]
        where = f" ({self.source})" if self.source else ""
        workers = f"{self.workers} worker" + ("s" if self.workers != 1 else "")
        return f"{'+'.join(parts)} ms/msg on {self.cores:.2f} cores, {workers}{where}"


def available_cores(
    cores: float,
    *,
    priority_busy_cores: float = 0.0,
    peer_tasks: float = 0.0,
    our_tasks: int = 1,
    our_runnable: float | None = None,
) -> float:
    """Cores `our_tasks` CPU-hungry tasks can expect on a machine of `cores` shared with
    other work, as measured before ours started: `priority_busy_cores`, the cores used by
    tasks of a higher priority (a lower nice) than ours, and `peer_tasks`, how many tasks
    at our priority or lower were runnable on average.

    Higher-priority work is served first (nice 0 weighs 1024 against nice 15's 36 in
    CFS: nearly strict), so it keeps the cores it was using; what is left is shared
    evenly among the runnable tasks at our level, ours counted as `our_runnable` (how
    many of them were runnable on average in a comparable run: a pipeline's processes
    wait on each other, so fewer than all; None: all `our_tasks`, at least 1). Never
    more than one core per task of ours.

    Why not CFS weights alone: in quick runs at load 4-7 (2 cores), weighting the
    runnable tasks seen before the run by their nice gave a nice-15 benchmark 0.11 of a
    core where it used 0.43; the nice-0 tasks seen runnable were not runnable all the
    time. Their measured CPU is what they take.
    """
    if not cores > 0:
        raise ValueError("cores must be positive")
    if our_tasks < 1:
        raise ValueError("at least one task of ours")
    left = max(0.0, cores - max(0.0, priority_busy_cores))
    ours = float(our_tasks) if our_runnable is None else max(1.0, min(our_runnable, our_tasks))
    share = left * ours / (ours + max(0.0, peer_tasks))
    return min(share, float(our_tasks), cores)
