"""`dripline plan --latency db:...`: latency samples from any dripline database.

The query is the store's (`Store.latency_samples_ms`); this opens a short-lived engine
of its own, with no schema check, so a planner run can point at any dripline database
(even one a dispatcher is using, or one at an older revision) without joining its pool,
and tells a missing database apart from one that is not dripline's.
"""

from __future__ import annotations

import os

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from dripline.errors import ConfigError, DatabaseUnavailable, StoreError
from dripline.store.sql.operator import LATENCY_SAMPLES
from dripline.store.urls import MEMORY_ONLY, DatabaseUrl, parse_database_url, redact_url

__all__ = ["latency_samples_ms"]


async def latency_samples_ms(database_url: str, *, limit: int = 20_000) -> list[float]:
    """The `latency_ms` of the most recent `limit` sends that recorded one, newest first.

    Raises ConfigError for a bad URL or a missing SQLite file (connecting would create
    an empty one), DatabaseUnavailable when the server cannot be reached, and StoreError
    when the database is not a dripline database.
    """
    url = parse_database_url(database_url)
    _require_sqlite_file(url)
    engine = create_async_engine(url.async_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(LATENCY_SAMPLES, {"b_limit": limit})).scalars().all()
    except (OSError, DBAPIError) as exc:
        unreachable = isinstance(exc, DBAPIError) and (
            exc.connection_invalidated or "connect" in str(exc.orig).lower()
        )
        if unreachable:
            raise DatabaseUnavailable(
                f"cannot reach {redact_url(database_url)}: {type(exc).__name__}"
            ) from exc
        if isinstance(exc, OSError):
            raise DatabaseUnavailable(
                f"cannot reach {redact_url(database_url)}: {exc.strerror or exc}"
            ) from exc
        raise StoreError(
            f"{redact_url(database_url)} has no readable messages table "
            "(not a dripline database, or not migrated)"
        ) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"reading latencies from {redact_url(database_url)}: {exc}") from exc
    finally:
        await engine.dispose()
    return [float(v) for v in rows]


def _require_sqlite_file(url: DatabaseUrl) -> None:
    if url.backend == "memory":
        raise ConfigError(f"no sends to read in {MEMORY_ONLY}")
    # Connecting to a missing SQLite file would create an empty database there.
    if url.backend == "sqlite" and url.sqlite_path and not os.path.isfile(url.sqlite_path):
        raise ConfigError(f"no SQLite database at {url.sqlite_path!r}")
