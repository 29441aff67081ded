"""A local stand-in for Meta's WhatsApp Cloud API, for tests, demos and benchmarks.

async with running_fake(FakeConfig(rate_per_s=80, latency_ms=150)) as fake:
    client = CloudApiClient(base_url=fake.base_url, access_token="test-token", ...)
    ...
    assert fake.state.stats.accepted == 1

Meta's rules themselves (the window, WhatsApp IDs, templates, errors, status sequences)
are pure functions in `dripline.fake.rules`, `dripline.fake.templates` and
`dripline.fake.payloads`, for reuse without HTTP.
"""

from __future__ import annotations

from dripline.fake.app import (
    SENDER_KEY,
    STATE_KEY,
    RunningFake,
    check_message,
    create_app,
    error_body,
    running_fake,
)
from dripline.fake.config import FakeConfig, lognormal_params
from dripline.fake.payloads import Inbound
from dripline.fake.state import AcceptedMessage, FakeState, FakeStats, TokenBucket
from dripline.fake.templates import TemplateRegistry, TemplateSpec
from dripline.fake.webhooks import WebhookSender, reply_for

__all__ = [
    "SENDER_KEY",
    "STATE_KEY",
    "AcceptedMessage",
    "FakeConfig",
    "FakeState",
    "FakeStats",
    "Inbound",
    "RunningFake",
    "TemplateRegistry",
    "TemplateSpec",
    "TokenBucket",
    "WebhookSender",
    "check_message",
    "create_app",
    "error_body",
    "lognormal_params",
    "reply_for",
    "running_fake",
]
