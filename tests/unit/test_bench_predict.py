"""The bench's planner wiring: the steady CPU window, and a prediction fed another run's
CPU per message and the machine before the run, never the predicted run's own figures."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from bench.context import RunResult
from bench.machine import CpuTrace, MachineLoad, Steady
from bench.measure import Row
from bench.predict import Calibration, cpu_budget, predict, seen_latency_s

from dripline.planner import Arrivals, LatencyModel, PlanSettings
from dripline.settings import Policy

QUIET = MachineLoad(
    cores=2,
    others_busy_cores=0.0,
    priority_busy_cores=0.0,
    peer_tasks=0.0,
    loadavg=(0.1, 0.1, 0.1),
    our_nice=0,
    window_s=1.0,
)


def trace(points: list[tuple[float, int, float]]) -> CpuTrace:
    """(wall, accepted, dispatcher CPU) with PostgreSQL at half and the fake at a
    quarter of the dispatcher's CPU, the machine busy at 1.5 cores."""
    t = CpuTrace()
    for wall, accepted, cpu in points:
        t.samples.append((wall, accepted, cpu, cpu / 2, cpu / 4, 1.5 * wall, 0.5 * wall))
    return t


def test_steady_window_leaves_start_up_and_shutdown_out() -> None:
    # 1 s of start-up at 1 s of CPU, then 1,000 messages a second at 0.4 ms each.
    t = trace([(0.0, 0, 0.0), (1.0, 0, 1.0), (1.1, 100, 1.04), (1.9, 900, 1.36), (2.0, 1000, 1.4)])
    st = t.steady(1000)
    assert st is not None
    assert st.messages == 800
    assert st.dispatcher_ms == pytest.approx(0.4)
    assert st.database_ms == pytest.approx(0.2)
    assert st.api_ms == pytest.approx(0.1)
    assert st.machine_busy_cores == pytest.approx(1.5)
    assert st.machine_idle_cores == pytest.approx(0.5)


def test_our_runnable_tasks_are_averaged_over_the_window() -> None:
    t = trace([(0.0, 0, 0.0), (1.1, 100, 1.04), (1.5, 500, 1.2), (1.9, 900, 1.36)])
    t.runnable = [(0, 0), (100, 2), (500, 1), (900, 3), (1000, 0)]
    st = t.steady(1000)
    assert st is not None
    assert st.our_runnable == pytest.approx(2.0)


def test_no_steady_window_when_the_run_stalls() -> None:
    assert trace([(0.0, 0, 0.0), (1.0, 50, 0.5)]).steady(1000) is None
    assert CpuTrace().steady(10) is None


def test_cpu_budget_uses_the_calibration_and_the_machine() -> None:
    cal = Calibration(Steady(800, 0.8, 0.4, 0.3, 0.25, 1.5, 0.5), "a calibration run")
    cpu = cpu_budget(cal, QUIET, workers=1, postgres=False)
    # SQLite: no separate database cost; 2 quiet cores for the worker and the fake.
    assert cpu.database_ms == 0.0
    assert cpu.cores == pytest.approx(2.0)
    # The machine pays for 2,000 / 0.65 ms = 3,077/s, the worker's one core for 2,500/s.
    assert cpu.machine_limit_per_s() == pytest.approx(2000 / 0.65)
    assert cpu.limit_per_s() == pytest.approx(2500.0)
    # Nice-0 work took 1.2 cores, 6 tasks at our nice were runnable: we are 2 of 8
    # sharing the 0.8 left.
    busy = MachineLoad(2, 1.9, 1.2, 6.0, (6.0, 6.0, 6.0), 15, 1.0)
    assert cpu_budget(cal, busy, workers=1, postgres=False).cores == pytest.approx(0.2)
    # On PostgreSQL a backend per worker is ours too: 3 of 9.
    got = cpu_budget(cal, busy, workers=1, postgres=True).cores
    assert got == pytest.approx(0.8 * 3 / 9)


@dataclass
class FakeBench:
    rows: list[Row] = field(default_factory=list)
    checks: list[tuple[str, str, str, bool]] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def check(self, scenario: str, target: str, value: str, met: bool) -> None:
        self.checks.append((scenario, target, value, met))


@dataclass
class FakeRun:
    row: Row
    steady: Steady | None
    load: MachineLoad | None


def _measured(per_s: float, steady_ms: float) -> FakeRun:
    row = Row("11", "run", "dripline", "sqlite", messages=5000, throughput_per_s=per_s)
    row.bound_per_s = 1000.0
    return FakeRun(row, Steady(4000, 4.0, steady_ms, None, 0.2, 2.0, 0.0), QUIET)


def _predict(run: FakeRun, cal: Calibration | None) -> tuple[Row, FakeBench]:
    b = FakeBench()
    row = predict(
        b,  # type: ignore[arg-type]
        scenario="11",
        what="the sqlite run",
        measured=run,  # type: ignore[arg-type]
        settings=PlanSettings(
            policy=Policy.STATIC, batch_limit=1000, concurrency=100, rate_per_s=1000.0
        ),
        latency=LatencyModel.constant(0.1),
        arrivals=Arrivals.backlog(5000),
        cal=cal,
        postgres=False,
    )
    return row, b


def test_prediction_is_fed_the_calibration_not_the_run() -> None:
    # The run measured 2 ms per message and 500/s; the calibration said 0.8 + 0.2 ms on
    # 2 quiet cores: the CPU pays for 1,250/s (a core for the worker), so the prediction
    # is the slots' 1,000/s, whatever the run's own CPU figure.
    cal = Calibration(Steady(1600, 1.6, 0.8, None, 0.2, 2.0, 0.0), "a calibration run")
    row, b = _predict(_measured(500.0, 2.0), cal)
    assert row.throughput_per_s == pytest.approx(1000.0, rel=0.01)
    assert row.extra["fed"]["calibration_steady"]["dispatcher_ms"] == 0.8
    assert row.extra["measured_steady"]["dispatcher_ms"] == 2.0
    assert b.checks[0][3] is False  # 100% off
    # A costlier calibration binds: 1 core for one worker at 4 ms = 250/s.
    dear = Calibration(Steady(1600, 1.6, 4.0, None, 0.2, 2.0, 0.0), "a calibration run")
    row, _ = _predict(_measured(500.0, 2.0), dear)
    assert row.throughput_per_s == pytest.approx(250.0, rel=0.01)
    assert row.extra["binding"] == "CPU (a core per worker)"


def test_prediction_without_calibration_has_no_cpu_term() -> None:
    row, b = _predict(_measured(990.0, 0.4), None)
    assert row.extra["cpu_limit_per_s"] is None
    assert "no CPU term" in row.notes
    assert b.checks[0][3] is True


def test_the_latency_fed_is_the_calibration_runs_calls_as_its_workers_saw_them() -> None:
    cal = RunResult(
        row=Row("11", "cal", "dripline", "sqlite"),
        children=[],
        summaries=[{"latency_s": {"p50": 0.104, "p99": 0.11}}, {"latency_s": {"p50": 0.106}}],
    )
    assert seen_latency_s(cal) == pytest.approx(0.105)
    # A worker that sent nothing reports no latency; none at all: the nominal is used.
    assert seen_latency_s(RunResult(cal.row, [], summaries=[{"latency_s": None}, "x"])) is None
