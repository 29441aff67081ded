"""Prometheus metrics per sender number, read from the dispatcher at scrape time.

`dripline_sender_*{sender}`: each number's rate in force, and its accepted sends,
throttled responses (130429) and other failed sends since the worker started. The label
is the phone number id: an installation has a handful of numbers, so the label's
cardinality stays small (never a recipient's number). The counts live in the
dispatcher's pacing state (`SenderPacing.snapshot`), so the send path pays nothing for
them; a scrape copies a dict of a few entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["SenderCollector", "SenderSnapshot"]

SenderSnapshot = Mapping[str, Mapping[str, float]]


class SenderCollector(Collector):
    """Set `source` once the dispatcher exists (`Dispatcher.senders_snapshot`)."""

    def __init__(self, source: Callable[[], SenderSnapshot] | None = None) -> None:
        self.source = source

    def describe(self) -> Iterable[Metric]:
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        return self._families(self.source() if self.source is not None else {})

    @staticmethod
    def _families(snap: SenderSnapshot) -> list[Metric]:
        rate = GaugeMetricFamily(
            "dripline_sender_rate_per_second",
            "Each sender number's send rate in force, all workers together: its own "
            "rate_per_s, else its throughput tier.",
            labels=["sender"],
        )
        sent = CounterMetricFamily(
            "dripline_sender_sent",
            "Sends the Cloud API accepted, per sender number (this worker).",
            labels=["sender"],
        )
        throttled = CounterMetricFamily(
            "dripline_sender_throttled",
            "Sends refused for the number's throughput (130429), per sender number.",
            labels=["sender"],
        )
        errors = CounterMetricFamily(
            "dripline_sender_errors",
            "Sends that failed other than by a throttle, per sender number.",
            labels=["sender"],
        )
        for number, row in sorted(snap.items()):
            rate.add_metric([number], float(row.get("rate_per_s", 0.0)))
            sent.add_metric([number], float(row.get("sent", 0)))
            throttled.add_metric([number], float(row.get("throttled", 0)))
            errors.add_metric([number], float(row.get("errors", 0)))
        return [rate, sent, throttled, errors]
