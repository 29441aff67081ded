"""Which failures stop the whole sender with an alert (dispatcher/alerts.py)."""

from __future__ import annotations

import pytest

from dripline.dispatcher.alerts import AlertKind, sender_alert
from dripline.dispatcher.constants import QUALITY_RETRY_S


@pytest.mark.parametrize(
    ("error_class", "code", "in_a_row", "kind", "probe_after_s"),
    [
        ("unknown", 999001, 19, None, None),  # not yet: under the threshold
        ("unknown", 999001, 20, AlertKind.UNKNOWN_CODE, None),
        ("unknown", 999001, 35, AlertKind.UNKNOWN_CODE, None),  # each probe's failure too
        ("unknown", None, 20, AlertKind.UNKNOWN_CODE, None),
        ("quality_throttle", 131048, 0, AlertKind.SENDER_LIMITED, QUALITY_RETRY_S),
        ("quality_throttle", 131064, 0, AlertKind.SENDER_LIMITED, QUALITY_RETRY_S),
        ("quality_throttle", 131049, 0, None, None),  # one user's limit, not the number's
        ("quality_throttle", 132069, 0, None, None),  # one flow's limit
        ("transient", 131000, 50, None, None),  # outages are the outage detector's
        ("permanent", 131026, 50, None, None),
        ("throttle", 130429, 50, None, None),
    ],
)
def test_sender_alerts(
    error_class: str,
    code: int | None,
    in_a_row: int,
    kind: AlertKind | None,
    probe_after_s: float | None,
) -> None:
    alert = sender_alert(error_class, code, "msg", unknown_in_a_row=in_a_row, threshold=20)
    if kind is None:
        assert alert is None
        return
    assert alert is not None
    assert alert.kind is kind
    assert alert.code == code
    assert str(code) in alert.reason
    assert alert.probe_after_s == probe_after_s
