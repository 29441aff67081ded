"""Read-only report queries for the operator's tools (`dripline plan --latency db:...`).

Kept apart from the `Store` contract: these never write, hold no leases and open a
short-lived engine of their own, so a planner run can point at any dripline database
(even one a dispatcher is using) without joining its pool.
"""

from __future__ import annotations

import os

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from dripline.errors import ConfigError, DatabaseUnavailable, StoreError
from dripline.store.schema import messages
from dripline.store.urls import DatabaseUrl, parse_database_url, redact_url

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
    query = (
        select(messages.c.latency_ms)
        .where(messages.c.latency_ms.is_not(None), messages.c.sent_at.is_not(None))
        .order_by(messages.c.sent_at.desc())
        .limit(limit)
    )
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).scalars().all()
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
    # Connecting to a missing SQLite file would create an empty database there.
    if url.backend == "sqlite" and url.sqlite_path and not os.path.isfile(url.sqlite_path):
        raise ConfigError(f"no SQLite database at {url.sqlite_path!r}")
