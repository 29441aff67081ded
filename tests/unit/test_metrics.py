"""PrometheusObserver: names, labels, bounded cardinality, and what each event moves."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dripline.dispatcher.stats import DispatchObserver, DispatchStats, FanOut
from dripline.metrics import (
    LAG_BUCKETS_S,
    PrometheusObserver,
    code_label,
    new_registry,
    window_name,
)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def observer(registry: CollectorRegistry) -> PrometheusObserver:
    return PrometheusObserver(registry)


def test_is_a_dispatch_observer(observer: PrometheusObserver) -> None:
    as_protocol: DispatchObserver = observer
    FanOut(DispatchStats(), as_protocol).on_sent(0.1, 0.2)


def test_sent_moves_counter_and_histograms(
    registry: CollectorRegistry, observer: PrometheusObserver
) -> None:
    observer.on_sent(0.05, 1.5)
    observer.on_sent(0.15, 0.0)
    labels = {"outcome": "sent", "error_class": "none", "code": "none"}
    assert sample(registry, "dripline_sends_total", **labels) == 2
    assert sample(registry, "dripline_send_latency_seconds_count") == 2
    assert sample(registry, "dripline_send_latency_seconds_sum") == pytest.approx(0.2)
    assert sample(registry, "dripline_schedule_lag_seconds_sum") == pytest.approx(1.5)
    assert sample(registry, "dripline_schedule_lag_seconds_bucket", le="0.01") == 1
    assert sample(registry, "dripline_schedule_lag_seconds_bucket", le="2.5") == 2


def test_negative_lag_counts_as_on_time(
    registry: CollectorRegistry, observer: PrometheusObserver
) -> None:
    observer.on_sent(0.01, -0.3)  # clocks of two machines disagree slightly
    assert sample(registry, "dripline_schedule_lag_seconds_sum") == 0.0
    assert sample(registry, "dripline_schedule_lag_seconds_bucket", le="0.01") == 1


def test_lag_buckets_span_10ms_to_an_hour() -> None:
    assert LAG_BUCKETS_S[0] == 0.01
    assert LAG_BUCKETS_S[-1] == 3600.0
    assert list(LAG_BUCKETS_S) == sorted(LAG_BUCKETS_S)


@pytest.mark.parametrize(
    ("error_class", "code", "action", "throttle", "retry"),
    [
        ("throttle", 130429, "retry", 1, 1),
        ("pair_throttle", 131056, "retry", 1, 1),
        ("quality_throttle", 131048, "retry", 1, 1),
        ("permanent", 131026, "fail", 0, 0),
        ("transient", None, "unknown", 0, 0),
        ("window", 131047, "fallback", 0, 0),
        ("auth", 190, "trip", 0, 0),
    ],
)
def test_failures(
    registry: CollectorRegistry,
    observer: PrometheusObserver,
    error_class: str,
    code: int | None,
    action: str,
    throttle: int,
    retry: int,
) -> None:
    observer.on_failure(error_class, code, action)
    observer.on_failure(error_class, code, action)
    labels = {"outcome": action, "error_class": error_class, "code": code_label(code)}
    assert sample(registry, "dripline_sends_total", **labels) == 2
    assert sample(registry, "dripline_retries_total") == 2 * retry
    throttles = sum(
        sample(registry, "dripline_throttle_events_total", error_class=c)
        for c in ("throttle", "pair_throttle", "quality_throttle")
    )
    assert throttles == 2 * throttle


def test_labels_stay_bounded(registry: CollectorRegistry, observer: PrometheusObserver) -> None:
    # Unknown codes, classes and actions collapse into `other`: a buggy or hostile
    # stream of codes cannot grow the number of series.
    for code in range(900_000, 900_500):
        observer.on_failure("made-up", code, "weird")
    text = generate_latest(registry).decode()
    series = [line for line in text.splitlines() if line.startswith("dripline_sends_total{")]
    assert 'dripline_sends_total{code="other",error_class="other",outcome="other"} 500.0' in text
    assert len(series) <= 3  # sent, the zero retry series, and `other`


def test_code_label() -> None:
    assert code_label(None) == "none"
    assert code_label(130429) == "130429"
    assert code_label(424242) == "other"


def test_gauges(registry: CollectorRegistry, observer: PrometheusObserver) -> None:
    observer.on_in_flight(7)
    observer.on_limits(32, 40.0)
    observer.on_breaker(True, "190: token expired")
    assert sample(registry, "dripline_in_flight") == 7
    assert sample(registry, "dripline_concurrency_limit") == 32
    assert sample(registry, "dripline_rate_limit_per_second") == 40
    assert sample(registry, "dripline_circuit_breaker_open") == 1
    assert sample(registry, "dripline_circuit_breaker_trips_total") == 1
    observer.on_breaker(False, None)
    assert sample(registry, "dripline_circuit_breaker_open") == 0
    # The reason is free text: it must not become a label.
    assert "token expired" not in generate_latest(registry).decode()


def test_db_durations(registry: CollectorRegistry, observer: PrometheusObserver) -> None:
    observer.on_claim(30, 0.004)
    observer.on_claim(0, 0.002)
    observer.on_record(30, 0.02)
    assert sample(registry, "dripline_claimed_total") == 30
    assert sample(registry, "dripline_claim_duration_seconds_count") == 2
    assert sample(registry, "dripline_recorded_total") == 30
    assert sample(registry, "dripline_record_duration_seconds_sum") == pytest.approx(0.02)


def test_exposition_parses_and_follows_conventions(observer: PrometheusObserver) -> None:
    registry = new_registry()
    PrometheusObserver(registry).on_sent(0.1, 0.1)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert "process_resident_memory_bytes" in families or "python_gc_objects_collected" in families
    for name, family in families.items():
        if not name.startswith("dripline_"):
            continue
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), name


def test_window_name() -> None:
    assert [window_name(w) for w in (60, 300, 900, 45)] == ["1m", "5m", "15m", "45s"]
