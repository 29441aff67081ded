"""When a worker may send at its share of the number's rate. Pure; time passed in.

Workers split the configured rate by the number of live workers (heartbeat within
`live_after_s`). Two moments break that split, and the gate closes for both:

- joining: the others still send at their old, larger shares until each has beaten
  once and seen the newcomer. A worker (re)joining live ones sends nothing until each
  of them has beaten since. Beats are counted (`stats["beats"]`), not timed, so clock
  skew between machines does not matter.
- going stale: a worker whose heartbeats stopped succeeding (a long pause, a partition
  from the database) has been dropped by the others, who took over its share. It sends
  nothing once its last successful beat is older than `live_after_s` (less a margin),
  and when its beats succeed again it joins anew.

How soon a joiner may start is how soon the others beat after it came. Waiting for
their regular beats (every `heartbeat_s`, 2 s) left a worker started beside another
idle for up to 2 s while the other sent at half the combined rate (issue 14, scenario
11 with 2 workers: 0.80 of the bound). So a worker with a backlog looks at the live
set between beats and beats at once when it changed (`outdated`), and a joiner looks
often and beats as soon as every other has beaten since it came (`ready`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ShareGate"]


@dataclass(slots=True)
class ShareGate:
    live_after_s: float
    margin_s: float
    always_open: bool = False  # the seed's cron baseline has no rate to share
    caught_up: bool = False
    valid_until: float = float("-inf")
    _last_ok: float | None = None
    _others_at_join: dict[str, int] | None = field(default=None)
    _counted: frozenset[str] = frozenset()  # the others our share was split with

    def on_beat(self, started: float, others: Mapping[str, int]) -> None:
        """A heartbeat that began at `started` succeeded; `others` are the other live
        workers' beat counts."""
        if self._last_ok is not None and started - self._last_ok > self.live_after_s:
            self._others_at_join = None  # the others may have dropped us: join again
        self._last_ok = started
        if self._others_at_join is None:
            self._others_at_join = dict(others)
        self._counted = frozenset(others)
        self.caught_up = self.ready(others)
        fence = started + self.live_after_s - self.margin_s
        self.valid_until = fence if self.caught_up else float("-inf")

    def ready(self, others: Mapping[str, int]) -> bool:
        """Has every other live worker beaten since this one joined (`others`: their
        beat counts now)? Then a beat of ours opens the gate."""
        joined = self._others_at_join
        if joined is None:
            return False
        return all(beats > joined.get(wid, -1) for wid, beats in others.items())

    def outdated(self, others: Mapping[str, int]) -> bool:
        """Are the other live workers not the ones our share was split with? A newcomer
        waits for our next beat to send at all; one that left leaves rate unused."""
        return frozenset(others) != self._counted

    def may_send(self, now: float) -> bool:
        return self.always_open or now <= self.valid_until
