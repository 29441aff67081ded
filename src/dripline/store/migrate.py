"""Schema migrations with Alembic, configured in code (no alembic.ini).

The revisions live in `dripline/store/migrations/` inside the package, so an installed
wheel can upgrade a database by itself: `dripline db upgrade`, or automatically on first
use for SQLite (see `open_store`).

Alembic is imported only to migrate. Every process checks the schema at start, and
`dripline run --once` under cron starts often: loading Alembic and its scripts to learn
the head cost about a third of the start-up. `head_revision` reads the revision ids from
the scripts' text instead, and `current_revision` reads Alembic's version table with
one query (tests/unit/test_migrate_head.py checks both against Alembic's own answer).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from dripline.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade_connection"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"

_head: str | None = None
_REVISION = re.compile(r"^revision(?:: *[^=]+)? *= *['\"]([^'\"]+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision(?:: *[^=]+)? *= *(.+)$", re.M)
_IDS = re.compile(r"['\"]([^'\"]+)['\"]")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations, bound to `connection`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_from_scripts(sources: list[str]) -> str:
    """The one revision no other script names as its `down_revision`."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for source in sources:
        rev = _REVISION.search(source)
        if rev is None:
            continue
        revisions.add(rev.group(1))
        down = _DOWN.search(source)
        if down is not None:
            parents.update(_IDS.findall(down.group(1)))
    heads = sorted(revisions - parents)
    if len(heads) != 1:
        raise StoreError(f"packaged migrations have {len(heads)} heads ({heads}), need one")
    return heads[0]


def head_revision() -> str:
    """The newest revision this version of dripline knows."""
    global _head
    if _head is None:
        scripts = sorted((MIGRATIONS_DIR / "versions").glob("*.py"))
        _head = head_from_scripts([p.read_text(encoding="utf-8") for p in scripts])
    return _head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, None for a database without dripline's schema."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    return one_revision([r[0] for r in rows])


def one_revision(values: list[Any]) -> str | None:
    """The revision the version table's rows name (None: no row)."""
    if len(values) > 1:
        # What Alembic's MigrationContext.get_current_revision refuses too.
        raise StoreError(f"database is at several revisions at once: {sorted(values)}")
    return str(values[0]) if values else None


def upgrade_connection(connection: Connection, revision: str = "head") -> None:
    """Upgrade the database behind `connection` (inside its transaction) to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(connection), revision)
