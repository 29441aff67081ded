"""The planner's CPU term: cores / CPU per message bounds the send rate, a worker uses a
core at most, a shared machine's share, and no bound at all unless one is given."""

from __future__ import annotations

import pytest

from dripline.planner import (
    Arrivals,
    CpuBudget,
    LatencyModel,
    PlanSettings,
    available_cores,
    capacity_per_s,
    simulate,
)
from dripline.settings import Policy

# Scenario 11's shape: 100 in flight x 100 ms and 1,000/s, both limits at 1,000/s.
S11 = PlanSettings(policy=Policy.STATIC, batch_limit=1000, concurrency=100, rate_per_s=1000.0)
L100 = LatencyModel.constant(0.100)


def with_cpu(settings: PlanSettings, cpu: CpuBudget | None) -> PlanSettings:
    return PlanSettings(
        **{
            **{n: getattr(settings, n) for n in settings.__dataclass_fields__},
            "cpu": cpu,
        }
    )


def test_limit_is_cores_over_cost() -> None:
    # 2 cores, 0.4 + 0.3 + 0.3 ms a message: 2,000 ms of CPU a second / 1.0 ms.
    cpu = CpuBudget(dispatcher_ms=0.4, database_ms=0.3, api_ms=0.3, cores=2.0, workers=2)
    assert cpu.total_ms == pytest.approx(1.0)
    assert cpu.limit_per_s() == pytest.approx(2000.0)
    assert cpu.binding() == "CPU (cores)"


def test_one_worker_uses_one_core_at_most() -> None:
    # 8 cores would pay for 8,000/s, but one event loop at 0.5 ms runs 2,000/s.
    one = CpuBudget(dispatcher_ms=0.5, cores=8.0, workers=1)
    assert one.limit_per_s() == pytest.approx(2000.0)
    assert one.binding() == "CPU (a core per worker)"
    # Two workers: 4,000/s; the cores are not the limit either.
    assert CpuBudget(dispatcher_ms=0.5, cores=8.0, workers=2).limit_per_s() == pytest.approx(4000.0)
    # Fewer cores than workers: the cores are.
    assert CpuBudget(dispatcher_ms=0.5, cores=0.5, workers=4).limit_per_s() == pytest.approx(1000.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dispatcher_ms": 0.0, "cores": 2.0},
        {"dispatcher_ms": 0.4, "cores": 0.0},
        {"dispatcher_ms": 0.4, "cores": 2.0, "database_ms": -0.1},
        {"dispatcher_ms": 0.4, "cores": 2.0, "workers": 0},
    ],
)
def test_invalid_budgets_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CpuBudget(**kwargs)  # type: ignore[arg-type]


def test_no_cpu_budget_changes_nothing() -> None:
    plain = simulate(S11, L100, Arrivals.backlog(3000))
    assert S11.cpu is None
    assert capacity_per_s(S11, 0.1) == (1000.0, "concurrency/latency")
    # A budget that does not bind leaves the plan as it was.
    roomy = simulate(
        with_cpu(S11, CpuBudget(dispatcher_ms=0.1, cores=2.0)), L100, Arrivals.backlog(3000)
    )
    assert roomy.drain_s == pytest.approx(plain.drain_s, rel=0.01)
    assert roomy.binding == plain.binding


def test_cpu_bound_run_sends_at_the_cpu_limit() -> None:
    # The scenario-11 shape on 1 core at 1.6 ms a message: 625/s, not 1,000/s.
    cpu = CpuBudget(dispatcher_ms=0.9, database_ms=0.4, api_ms=0.3, cores=1.0)
    st = with_cpu(S11, cpu)
    r = simulate(st, L100, Arrivals.backlog(5000))
    assert cpu.limit_per_s() == pytest.approx(625.0)
    assert r.send_rate_per_s == pytest.approx(625.0, rel=0.01)
    assert r.binding == "CPU (cores)"
    assert capacity_per_s(st, 0.1)[0] == pytest.approx(625.0)
    # Lag grows with the queue in front of the CPU: the last one waits ~8 s.
    assert r.lag_max_s == pytest.approx(5000 / 625, rel=0.02)


def test_send_rate_counts_first_to_last_send() -> None:
    # 1,000 sends at 1,000/s leave over 0.999 s; throughput_per_s also counts the last
    # send's 100 ms, which is why the planner said 980/s for scenario 11's 5,000.
    r = simulate(S11, L100, Arrivals.backlog(5000))
    assert r.send_rate_per_s == pytest.approx(1000.0, rel=0.005)
    assert r.throughput_per_s == pytest.approx(5000 / 5.1, rel=0.005)
    assert simulate(S11, L100, Arrivals.backlog(1)).send_rate_per_s == 0.0


def test_trickle_is_arrival_bound_whatever_the_cpu() -> None:
    # 33/s at 6 ms a message: a fifth of a core, so the arrivals set the rate.
    due = [i / 33 for i in range(1980)]
    cpu = CpuBudget(dispatcher_ms=6.0, cores=1.0)
    r = simulate(with_cpu(S11, cpu), L100, due)
    assert r.send_rate_per_s == pytest.approx(33.0, rel=0.01)


def test_label_names_the_cpu_limit() -> None:
    st = with_cpu(S11, CpuBudget(dispatcher_ms=0.5, cores=1.0))
    assert st.label().endswith("cpu 2000/s")
    assert "cpu" in simulate(st, L100, Arrivals.backlog(10)).to_dict()["settings"]


# -- a shared machine -----------------------------------------------------------------


def test_quiet_machine_gives_its_cores_up_to_one_per_task() -> None:
    assert available_cores(2.0, our_tasks=3) == pytest.approx(2.0)
    assert available_cores(8.0, our_tasks=2) == pytest.approx(2.0)


def test_higher_priority_work_keeps_what_it_used() -> None:
    # Nice-0 work used 1.5 cores before the run: half a core is left, all ours.
    assert available_cores(2.0, priority_busy_cores=1.5, our_tasks=3) == pytest.approx(0.5)
    assert available_cores(2.0, priority_busy_cores=2.5, our_tasks=3) == 0.0


def test_peers_share_what_is_left_evenly() -> None:
    # 6 runnable tasks at our nice on average and 3 of ours: a third of the 2 cores.
    assert available_cores(2.0, peer_tasks=6.0, our_tasks=3) == pytest.approx(2.0 / 3)
    # With 1 core taken by higher-priority work: a third of the other one.
    got = available_cores(2.0, priority_busy_cores=1.0, peer_tasks=6.0, our_tasks=3)
    assert got == pytest.approx(1.0 / 3)
    # Of our 3 tasks, 1.5 were runnable on average (a pipeline waits on itself): 1.5
    # of 7.5 runnable tasks get the 2 cores.
    got = available_cores(2.0, peer_tasks=6.0, our_tasks=3, our_runnable=1.5)
    assert got == pytest.approx(2.0 * 1.5 / 7.5)
    # Never fewer than one: a run with messages to send always wants a core.
    assert available_cores(2.0, peer_tasks=1.0, our_tasks=3, our_runnable=0.1) == 1.0
    with pytest.raises(ValueError):
        available_cores(2.0, our_tasks=0)
    with pytest.raises(ValueError):
        available_cores(0.0)
