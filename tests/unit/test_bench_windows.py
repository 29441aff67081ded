"""The arithmetic of CPU read inside a measured window (bench/windows.py)."""

from __future__ import annotations

import os
import time

import pytest
from bench.windows import messages_in, read_at, window_usage


def test_cpu_per_message_is_the_difference_of_the_two_readings() -> None:
    # 2.5 s of CPU before the window (start-up) is not counted: only 3.5 -> 4.7.
    w = window_usage((100.0, 3.5), (161.0, 4.7), 600)
    assert w.cpu_s == pytest.approx(1.2)
    assert w.seconds == pytest.approx(61.0)
    assert w.ms_per_message == pytest.approx(2.0)
    assert w.core_share == pytest.approx(1.2 / 61.0)


def test_an_idle_window_has_a_share_and_no_per_message_figure() -> None:
    w = window_usage((10.0, 0.80), (70.0, 0.92), 0)
    assert w.ms_per_message is None
    assert w.core_share == pytest.approx(0.002)
    assert w.as_dict()["core_share"] == 0.002


def test_database_cpu_is_its_own_difference() -> None:
    w = window_usage((0.0, 1.0), (10.0, 2.0), 100, database=(5.0, 5.3))
    assert w.database_ms_per_message == pytest.approx(3.0)
    assert window_usage((0.0, 1.0), (10.0, 2.0), 100).database_ms_per_message is None


def test_readings_that_cannot_be_one_process_are_refused() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        window_usage((10.0, 1.0), (10.0, 2.0), 1)
    with pytest.raises(ValueError, match="went down"):
        window_usage((0.0, 2.0), (10.0, 1.0), 1)


def test_messages_in_counts_a_half_open_window() -> None:
    due = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert messages_in(due, 0.5, 2.0) == 3
    assert messages_in(due, -1.0, 3.0) == 5
    assert messages_in(due, 2.5, 3.0) == 0


async def test_read_at_reads_a_live_process_and_stops_for_a_gone_one() -> None:
    now = time.time()
    readings = await read_at(os.getpid(), [now, now + 0.01])
    assert len(readings) == 2
    assert readings[0][1] <= readings[1][1]
    assert readings[0][2] is None
    assert await read_at(2**22 + 7, [now]) == []  # beyond pid_max's default: no process
