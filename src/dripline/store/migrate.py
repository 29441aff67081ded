"""Schema migrations with Alembic, configured in code (no alembic.ini).

The revisions live in `dripline/store/migrations/` inside the package, so an installed
wheel can upgrade a database by itself: `dripline db upgrade`, or automatically on first
use for SQLite (see `open_store`).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade_connection"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"

_head: str | None = None


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations, bound to `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this version of dripline knows."""
    global _head
    if _head is None:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None, "no migrations packaged"
        _head = head
    return _head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, None for a database without dripline's schema."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_connection(connection: Connection, revision: str = "head") -> None:
    """Upgrade the database behind `connection` (inside its transaction) to `revision`."""
    command.upgrade(alembic_config(connection), revision)
