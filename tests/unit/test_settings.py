"""Settings: precedence, presets, validation, redaction."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from dripline.errors import ConfigError
from dripline.settings import Policy, Preset, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("DRIPLINE_") or key.lower() in ("https_proxy", "no_proxy"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray dripline.toml


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url == "sqlite:///./dripline.db"
    assert s.rate_per_s == 80.0  # the Cloud API's default throughput per number
    assert s.policy is Policy.STATIC
    assert s.max_attempts == 8


def test_flags_beat_env_beat_file_beat_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "dripline.toml").write_text("batch_limit = 11\nconcurrency = 12\nrate_per_s = 13\n")
    assert load_settings().batch_limit == 11
    monkeypatch.setenv("DRIPLINE_CONCURRENCY", "22")
    monkeypatch.setenv("DRIPLINE_RATE_PER_S", "23")
    s = load_settings(rate_per_s=33.0)
    assert (s.batch_limit, s.concurrency, s.rate_per_s) == (11, 22, 33.0)


def test_config_file_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text('policy = "adaptive"\n')
    monkeypatch.setenv("DRIPLINE_CONFIG", str(other))
    assert load_settings().policy is Policy.ADAPTIVE
    monkeypatch.setenv("DRIPLINE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings()


def test_a_preset_fills_what_was_not_given() -> None:
    s = load_settings(preset=Preset.MODERATE)
    assert (s.batch_limit, s.concurrency) == (40, 7)
    assert s.preset_values() == {"batch_limit": 40, "concurrency": 7}
    s = load_settings(preset=Preset.HIGH_VOLUME, concurrency=99)
    assert (s.batch_limit, s.concurrency) == (50, 99)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate_per_s": 0}, "rate_per_s"),
        ({"batch_limit": -1}, "batch_limit"),
        ({"database_url": "mysql://h/db"}, "database_url"),
        ({"policy": "fastest"}, "policy"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    assert field in str(info.value)
    assert "\n" not in str(info.value)


def test_secrets_are_redacted() -> None:
    s = load_settings(
        whatsapp_access_token="EAAG-very-secret",
        whatsapp_app_secret="app-secret",
        database_url="postgresql://u:pw-secret@db/x",
    )
    shown = str(s.redacted())
    for secret in ("EAAG-very-secret", "app-secret", "pw-secret"):
        assert secret not in shown
    assert "EAAG-very-secret" not in repr(s)


def test_the_proxy_comes_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (load_settings().proxy_url, load_settings().no_proxy) == (None, None)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    s = load_settings()
    assert (s.proxy_url, s.no_proxy) == ("http://proxy.internal:3128", "localhost")
    # dripline's own setting wins; an empty one turns the proxy off.
    monkeypatch.setenv("DRIPLINE_HTTPS_PROXY", "http://other:8080")
    assert load_settings().proxy_url == "http://other:8080"
    assert load_settings(https_proxy="").proxy_url == ""


def test_proxy_credentials_are_redacted_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://ana:pr0xy-secret@proxy.internal:3128")
    s = load_settings()
    assert s.redacted()["https_proxy"] == "http://***:***@proxy.internal:3128"
    for shown in (str(s.redacted()), repr(s), str(s)):
        assert "pr0xy-secret" not in shown and "ana:" not in shown
    # The log scrubber gets the password and the encoded Proxy-Authorization value.
    encoded = base64.b64encode(b"ana:pr0xy-secret").decode()
    assert {"pr0xy-secret", encoded} <= set(s.secret_values())


def test_a_bad_proxy_url_is_a_config_error_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://ana:pr0xy-secret@proxy.internal:1080")
    with pytest.raises(ConfigError, match="only http:// proxies") as info:
        load_settings()
    assert "pr0xy-secret" not in str(info.value)
