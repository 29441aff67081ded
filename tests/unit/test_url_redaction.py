"""Every secret in a database URL is hidden wherever the URL is shown, and known to the
log scrubber."""

from __future__ import annotations

import pytest

from dripline.settings import load_settings
from dripline.store.urls import redact_url, url_secrets


@pytest.mark.parametrize(
    ("url", "shown", "secrets"),
    [
        ("postgresql://u:pw-123@h/db", "postgresql://u:***@h/db", ["pw-123"]),
        (
            "postgresql://u@h/db?password=qs-secret&ssl=require",
            "postgresql://u@h/db?password=***&ssl=require",
            ["qs-secret"],
        ),
        (
            "postgresql://u@h/db?sslpassword=k-pass&PGPASSWORD=x-pass",
            "postgresql://u@h/db?PGPASSWORD=***&sslpassword=***",
            ["x-pass", "k-pass"],
        ),
        (
            "postgresql://u@h/db?password=a1&password=b2",
            "postgresql://u@h/db?password=***",
            ["a1", "b2"],
        ),
        ("sqlite:///./dripline.db", "sqlite:///./dripline.db", []),
    ],
)
def test_redact_url(url: str, shown: str, secrets: list[str]) -> None:
    redacted = redact_url(url)
    assert all(s not in redacted for s in secrets)
    assert redacted.split("?")[0] == shown.split("?")[0]
    assert sorted(redacted.partition("?")[2].split("&")) == sorted(
        shown.partition("?")[2].split("&")
    )
    assert sorted(url_secrets(url)) == sorted(secrets)


def test_settings_hide_and_scrub_a_query_string_password() -> None:
    settings = load_settings(database_url="postgresql://u@db/x?password=hunter2-long")
    assert "hunter2-long" not in str(settings.redacted())
    assert "hunter2-long" in settings.secret_values()
