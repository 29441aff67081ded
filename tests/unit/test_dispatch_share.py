"""Workers sharing one number's rate (`dispatcher/share.py`): the gate's rules, and two
dispatchers on one store in virtual time, started together (issue 14, scenario 11 with
2 workers).

Before the joiner looked for the others' beats often and they beat as soon as they saw
it, the second worker sent nothing until the first one's next regular heartbeat (2 s),
while the first sent at its half of the slots: 0.80 of the bound on a quiet machine.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dripline.dispatcher.claimer import low_water
from dripline.dispatcher.engine import Dispatcher
from dripline.dispatcher.policies import claim_horizon, claim_size
from dripline.dispatcher.share import ShareGate
from dripline.flows import load_flows
from dripline.flows.base import OutboundMessage
from dripline.sim.loop import SimClock, VirtualTimeLoop, run_virtual
from dripline.store.base import Claim, Enrollment, Reservation, ReservationResult, WorkerInfo
from dripline.store.memory import MemoryStore
from tests.fixtures.dispatch import UNUSED_URL, fast_settings, phones

STORE_LATENCY_S = 0.002  # a store round trip in virtual time


def test_a_joiner_is_ready_once_every_other_has_beaten_since() -> None:
    gate = ShareGate(live_after_s=6.0, margin_s=1.0)
    assert not gate.ready({"a": 5})  # not joined yet: no beat of ours
    gate.on_beat(0.0, {"a": 5, "b": 2})
    assert not gate.caught_up and not gate.may_send(0.0)
    assert not gate.ready({"a": 6, "b": 2})
    assert gate.ready({"a": 6, "b": 3})
    assert gate.ready({"a": 6})  # b left: only a counts
    gate.on_beat(0.3, {"a": 6, "b": 3})
    assert gate.caught_up and gate.may_send(0.3)


def test_the_share_is_outdated_when_the_live_workers_change() -> None:
    gate = ShareGate(live_after_s=6.0, margin_s=1.0)
    gate.on_beat(0.0, {})
    assert gate.caught_up  # alone: nobody to wait for
    assert not gate.outdated({})
    assert gate.outdated({"b": 1})  # a joiner waits for our beat
    gate.on_beat(0.1, {"b": 1})
    assert not gate.outdated({"b": 1})
    assert not gate.outdated({"b": 7})  # its beats alone change nothing
    assert gate.outdated({})  # it left: its share is ours to take


def test_each_of_several_workers_claims_a_shorter_horizon() -> None:
    assert claim_horizon(1) == 1.0
    assert claim_horizon(2) == 0.5
    assert claim_horizon(4) == 0.25
    assert claim_horizon(10) == 0.25  # a claim stays worth its fixed cost
    assert claim_horizon(3, horizon_s=0.1) == 0.1  # never longer than alone
    # 2 workers at 1,000/s: 250 rows, again below 125 (alone: 1,000, again below 500).
    assert claim_size(1000, 500.0, claim_horizon(2), 0) == 250
    assert low_water(1000, 500.0, claim_horizon(2)) == 125
    assert claim_size(1000, 1000.0, claim_horizon(1), 0) == 1000
    assert low_water(1000, 1000.0, claim_horizon(1)) == 500


class _Store(MemoryStore):
    """Claims and reservations take STORE_LATENCY_S of virtual time; heartbeats are
    counted by worker."""

    beats: dict[str, int]

    async def claim_next(
        self, limit: int, lease_ttl_s: float, worker_id: str, now: datetime
    ) -> Claim:
        await asyncio.sleep(STORE_LATENCY_S)
        return await super().claim_next(limit, lease_ttl_s, worker_id, now)

    async def reserve(
        self, items: Sequence[Reservation], worker_id: str, now: datetime
    ) -> list[ReservationResult]:
        await asyncio.sleep(STORE_LATENCY_S)
        return await super().reserve(items, worker_id, now)

    async def heartbeat(self, worker: WorkerInfo, live_after_s: float) -> list[WorkerInfo]:
        self.beats[worker.id] = self.beats.get(worker.id, 0) + 1
        return await super().heartbeat(worker, live_after_s)


@dataclass
class _Result:
    wamid: str


class _Api:
    """Every call takes `latency_s` of virtual time; starts are kept per worker."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.starts: list[tuple[float, str]] = []

    def client(self, worker: str) -> _Client:
        return _Client(self, worker)


class _Client:
    def __init__(self, api: _Api, worker: str) -> None:
        self._api, self._worker = api, worker

    async def send(
        self,
        to: str,
        message: OutboundMessage,
        *,
        sender: str | None = None,
        callback_data: str | None = None,
    ) -> _Result:
        self._api.starts.append((asyncio.get_running_loop().time(), self._worker))
        await asyncio.sleep(self._api.latency_s)
        return _Result(f"wamid.{len(self._api.starts)}")


def _two_workers(n: int, *, stagger_s: float, slots: int = 50) -> tuple[_Api, dict[str, int]]:
    """Scenario 11 with 2 workers in virtual time: `n` due, 1,000/s between them,
    `slots` each, 100 ms calls, the default 2 s heartbeat; the second starts
    `stagger_s` after the first."""
    api = _Api(0.1)
    beats: dict[str, int] = {}

    async def main(loop: VirtualTimeLoop) -> None:
        clock = SimClock(loop)
        store = _Store()
        store.beats = beats
        at = clock.now() - timedelta(seconds=1)
        await store.enroll([Enrollment(phone=p, flow="demo", at=at) for p in phones(n)], at)
        settings = fast_settings(
            UNUSED_URL, rate_per_s=1000.0, concurrency=slots, batch_limit=1000, heartbeat_s=2.0
        )
        workers = [
            Dispatcher(
                store=store,
                client=api.client(wid),
                flows=load_flows(None),
                settings=settings,
                clock=clock,
                worker_id=wid,
                rng=random.Random(i),
            )
            for i, wid in enumerate(("w1", "w2"))
        ]
        first = asyncio.ensure_future(workers[0].run(max_seconds=600))
        await asyncio.sleep(stagger_s)
        second = asyncio.ensure_future(workers[1].run(max_seconds=600))
        while len(api.starts) < n and not (first.done() or second.done()):
            await asyncio.sleep(0.1)
        for w in workers:
            w.request_stop()
        await asyncio.gather(first, second)

    run_virtual(main)
    return api, beats


def _max_in_a_second(times: list[float]) -> int:
    j, most = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most


def test_two_workers_started_together_reach_the_bound() -> None:
    api, beats = _two_workers(5000, stagger_s=0.05)
    times = sorted(t for t, _ in api.starts)
    assert len(times) == 5000
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate >= 975.0  # 808/s before the join fix, 961/s before the shorter horizon
    # The second worker sent within a fraction of a heartbeat of the first.
    first = {w: min(t for t, u in api.starts if u == w) for w in ("w1", "w2")}
    assert first["w2"] - first["w1"] < 0.5
    # Neither was left sending alone for long at the end (0.35 s with 1 s claimed).
    last = [max(t for t, u in api.starts if u == w) for w in ("w1", "w2")]
    assert abs(last[0] - last[1]) < 0.2
    # Together they never went past the number's rate (plus the bucket's burst).
    assert _max_in_a_second(times) <= 1000 * 1.05 + 2
    # Looking for joiners is reads: the beats (writes) stay about one per heartbeat.
    assert max(beats.values()) <= 2 + (times[-1] - times[0]) / 2.0 + 3


def test_a_late_joiner_waits_for_the_other_to_lower_its_share() -> None:
    """Joining mid-drain a worker sending at the whole rate (enough slots for it): the
    rate over any second stays within the limit, and the joiner still starts soon."""
    api, _ = _two_workers(6000, stagger_s=2.7, slots=200)
    times = sorted(t for t, _ in api.starts)
    assert len(times) == 6000
    assert _max_in_a_second(times) <= 1000 * 1.05 + 2
    first_w2 = min(t for t, u in api.starts if u == "w2")
    assert first_w2 - 2.7 < 0.5
