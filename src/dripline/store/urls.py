"""Database URLs: what the user writes, what SQLAlchemy's async drivers need."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dripline.errors import ConfigError

__all__ = ["MEMORY_ONLY", "DatabaseUrl", "parse_database_url", "redact_url", "url_secrets"]

# Why memory:// is refused wherever a process opens the database by URL.
MEMORY_ONLY = (
    "memory:// keeps everything in one process and loses it when that process exits: "
    "it is for tests and the simulator; use sqlite:///./dripline.db or postgresql://..."
)


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    backend: str  # "sqlite", "postgresql" or "memory"
    async_url: URL
    sqlite_path: str | None  # None for PostgreSQL and in-memory SQLite


def parse_database_url(raw: str) -> DatabaseUrl:
    """Validate a `sqlite:///file.db` or `postgresql://...` URL and pick the async driver.

    `memory://` is the in-memory store (tests and the simulator; see `MEMORY_ONLY`)."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            f"database_url {redact_url(raw)!r} is not a URL; "
            "use sqlite:///./dripline.db or postgresql://user@host:5432/db"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        path = url.database or None
        if path == ":memory:":
            path = None
        return DatabaseUrl("sqlite", url.set(drivername="sqlite+aiosqlite"), path)
    if backend == "memory":
        return DatabaseUrl("memory", url, None)
    if backend in ("postgresql", "postgres"):
        if not url.database:
            raise ConfigError(f"database_url {redact_url(raw)!r} names no database")
        async_url = url.set(drivername="postgresql+asyncpg", query=_asyncpg_query(url, raw))
        return DatabaseUrl("postgresql", async_url, None)
    raise ConfigError(
        f"database_url scheme {url.drivername!r} is not supported; use sqlite:// or postgresql://"
    )


# libpq's TLS file options: asyncpg takes them from PGSSLROOTCERT, PGSSLCERT, PGSSLKEY.
_TLS_FILES = {"sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY"}
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _asyncpg_query(url: URL, raw: str) -> dict[str, str | tuple[str, ...]]:
    """The URL's query as SQLAlchemy's asyncpg dialect passes it to `asyncpg.connect`:
    libpq's `sslmode` (what Supabase and every other provider print) becomes asyncpg's
    `ssl`; `connect()` would refuse `sslmode` ("unexpected keyword argument")."""
    query = dict(url.query)
    for name, env in _TLS_FILES.items():
        if name in query:
            raise ConfigError(
                f"database_url {redact_url(raw)!r}: {name} is not supported in the URL; "
                f"set the {env} environment variable to the file instead"
            )
    if "sslmode" in query:
        mode = query.pop("sslmode")
        if "ssl" in query and query["ssl"] != mode:
            raise ConfigError(f"database_url {redact_url(raw)!r}: sslmode and ssl disagree")
        query["ssl"] = mode
    if "ssl" in query and query["ssl"] not in _SSL_MODES:
        raise ConfigError(
            f"database_url {redact_url(raw)!r}: ssl/sslmode must be one of {', '.join(_SSL_MODES)}"
        )
    return query


# Query parameters that carry a secret (libpq's `password`, `sslpassword`, ...), by a
# part of their lower-cased name.
_SECRET_PARAMS = ("password", "passwd", "pwd", "secret", "token", "key")


def _is_secret_param(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_PARAMS)


def url_secrets(raw: str) -> list[str]:
    """The secrets in a database URL (its password, secret query values), for the log
    scrubber."""
    try:
        url = make_url(raw)
    except ArgumentError:
        return []
    found = [url.password] if url.password else []
    for name, value in url.query.items():
        if _is_secret_param(name):
            values = (value,) if isinstance(value, str) else value
            found.extend(v for v in values if v)
    return [str(v) for v in found]


def redact_url(raw: str) -> str:
    """The URL with its password, and every query value that names a secret
    (`?password=`, `sslpassword=`, ...), replaced by '***'."""
    try:
        url = make_url(raw)
    except ArgumentError:
        return "<unparseable url>"
    query = {
        name: ("***" if _is_secret_param(name) else value) for name, value in url.query.items()
    }
    rendered = url.set(query=query).render_as_string(hide_password=True)
    return rendered.replace("%2A%2A%2A", "***")
