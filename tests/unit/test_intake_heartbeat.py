"""The webhook receiver's uptime record (`IntakeHeartbeat`): what counts as a gap.

Unknown sends are proven unaccepted only across unbroken uptime, so a gap recorded
where the receiver was in fact receiving leaves them unprovable for good (given up,
lost); a gap missed where it could not store webhooks risks a duplicate."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dripline.clock import FakeClock
from dripline.errors import DatabaseUnavailable
from dripline.inbox.intake import IntakeHeartbeat
from dripline.store import open_store
from dripline.store.base import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Flaky:
    """A store whose `record_intake` fails while `down` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False

    async def record_intake(self, *args: object, **kwargs: object) -> None:
        if self.down:
            raise DatabaseUnavailable("database unreachable")
        await self.store.record_intake(*args, **kwargs)  # type: ignore[arg-type]


async def _runs(store: Store) -> list[tuple[float, float]]:
    return [
        ((a - T0).total_seconds(), (b - T0).total_seconds())
        for a, b in await store.intake_uptime(T0)
    ]


async def test_a_late_beat_of_a_live_receiver_continues_its_run() -> None:
    # A busy machine held the beat up 3 s: the receiver was still receiving.
    store = await open_store("memory://")
    clock = FakeClock(T0)
    beat = IntakeHeartbeat(store, clock, ident="serve")
    await beat.beat()
    clock.advance(1.0)
    await beat.beat()
    clock.advance(3.0)
    await beat.beat()
    assert await _runs(store) == [(0.0, 4.0)]


async def test_a_beat_later_than_the_stall_bound_starts_a_new_run() -> None:
    store = await open_store("memory://")
    clock = FakeClock(T0)
    beat = IntakeHeartbeat(store, clock, ident="serve")
    await beat.beat()
    clock.advance(10.0)  # past the stall bound (5 s): it may have been stopped
    await beat.beat()
    assert await _runs(store) == [(0.0, 0.0), (10.0, 10.0)]


async def test_a_failed_beat_always_leaves_a_gap() -> None:
    # However soon the database is back, webhooks could not be stored meanwhile.
    flaky = Flaky(await open_store("memory://"))
    clock = FakeClock(T0)
    beat = IntakeHeartbeat(flaky, clock, ident="serve")  # type: ignore[arg-type]
    await beat.beat()
    clock.advance(0.5)
    flaky.down = True
    with pytest.raises(DatabaseUnavailable):
        await beat.beat()
    flaky.down = False
    clock.advance(0.5)
    await beat.beat()
    assert await _runs(flaky.store) == [(0.0, 0.0), (1.0, 1.0)]
