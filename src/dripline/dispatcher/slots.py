"""Concurrency slots on the send path, as pure rules.

A slot is an HTTP call under way, nothing else. A reserved send waiting for its rate
token (up to RESERVE_LEAD_S + GROUP_SPAN_S ahead) holds none: counting it made the
in-flight limit bind at about 0.75 of rate x latency, because each call's slot was
also spent on the tens of milliseconds before the call. Instead the launcher may
reserve a little past the slot limit (`launch_headroom`), and each send takes its slot
at its start time (`send.send_one`), waiting for one if every slot is busy.

A send that waited for its slot starts after its token's time; `StartWindow` keeps
such late starts from bunching past the number's rate in any one second, which is how
the Cloud API counts it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from dripline.dispatcher.constants import GROUP_SPAN_S, RESERVE_LEAD_S

__all__ = ["StartWindow", "launch_headroom", "launch_wake", "may_take"]


def launch_headroom(concurrency: int, rate_per_s: float) -> int:
    """Sends the launcher may have reserved beyond the slot limit: those whose tokens
    fall due within one reservation lead and group span at the rate (never more than
    the slot limit itself, so a concurrency-bound worker reserves at most twice its
    limit ahead of the calls)."""
    ahead = math.ceil(round(max(rate_per_s, 0.0) * (RESERVE_LEAD_S + GROUP_SPAN_S), 6))
    return max(1, min(concurrency, ahead))


def may_take(
    in_flight: int, starting: int, group: int, queued: int, concurrency: int, headroom: int
) -> bool:
    """May the launcher add one more send to the group it is forming? `starting`: sends
    reserved and waiting for their token or a slot; `queued`: claimed, not yet taken.

    While sends are already waiting, a new group opens only when there is room for a
    worthwhile one (half the headroom, or all that is queued): opening one per freed
    slot would cost a reservation transaction per send exactly when the slots bind.
    """
    room = concurrency + headroom - in_flight - starting - group
    if room <= 0:
        return False
    if group or not starting:
        return True
    return room >= min(max(1, headroom // 2), queued)


def launch_wake(concurrency: int, headroom: int, queued: int) -> int:
    """Calls plus reserved sends at or below which a waiting launcher may open a group
    (`may_take`); with none reserved it always may, as calls never exceed the slots."""
    return concurrency + headroom - min(max(1, headroom // 2), max(queued, 1))


@dataclass(slots=True)
class StartWindow:
    """Starts per sender number in the last second, so that no 1 s window ever holds
    more than the bucket allows (rate x (1 + burst_s)), even when starts were delayed
    by slot waits. The token bucket alone keeps this when every send starts on time."""

    burst_s: float = 0.05
    _starts: dict[str, deque[float]] = field(default_factory=dict)

    def wait(self, key: str, rate_per_s: float, now: float) -> float:
        """Seconds before `key` may start a send at `now` (0: record it and go)."""
        starts = self._starts.get(key)
        if starts is None:
            starts = self._starts[key] = deque()
        while starts and now - starts[0] >= 1.0:
            starts.popleft()
        allowed = max(1, math.floor(rate_per_s * (1.0 + self.burst_s)))
        if len(starts) >= allowed:
            return max(1e-3, starts[len(starts) - allowed] + 1.0 - now)
        starts.append(now)
        return 0.0
