"""Database URLs as providers print them: libpq's `sslmode` works with asyncpg."""

from __future__ import annotations

import pytest

from dripline.errors import ConfigError
from dripline.store.postgres import asyncpg_dsn
from dripline.store.urls import parse_database_url

SUPABASE = (
    "postgresql://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"
    "?sslmode=require"
)


def test_sslmode_becomes_asyncpgs_ssl_for_the_pool_and_stays_sslmode_for_listen() -> None:
    url = parse_database_url(SUPABASE)
    assert dict(url.async_url.query) == {"ssl": "require"}
    # The LISTEN connection goes through asyncpg's DSN parser, which knows `sslmode`
    # and would send an unknown `ssl` to the server as a setting.
    dsn = asyncpg_dsn(url)
    assert dsn.endswith("?sslmode=require") and "ssl=" not in dsn.replace("sslmode=", "")


@pytest.mark.parametrize("mode", ["disable", "prefer", "require", "verify-ca", "verify-full"])
def test_every_libpq_mode_is_accepted_either_way(mode: str) -> None:
    for name in ("sslmode", "ssl"):
        url = parse_database_url(f"postgresql://u@h/db?{name}={mode}&application_name=x")
        assert dict(url.async_url.query) == {"ssl": mode, "application_name": "x"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=on", "must be one of"),
        ("sslmode=require&ssl=disable", "disagree"),
        ("sslrootcert=/etc/ca.pem", "PGSSLROOTCERT"),
    ],
)
def test_what_asyncpg_cannot_take_is_refused_in_one_line(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_database_url(f"postgresql://u:secret@h/db?{query}")
    assert "secret" not in str(caught.value)
