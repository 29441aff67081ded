"""Start-up: each command imports only what it needs (issue 14, item 2).

`dripline run --once` under cron pays its imports on every run. These check which
modules a fresh interpreter holds after importing the CLI, or after building it for one
command: a heavy import added back at module level fails here (no timing involved).
"""

from __future__ import annotations

import json
import subprocess
import sys

import typer

from dripline.cli import COMMAND_MODULES, build_app
from dripline.store.migrate import head_from_scripts

# Never needed to start the dispatcher (nor to send with the demo flow): the server, the
# fake, the planner, migrations (only when a schema is behind), the second HTTP stack
# (the throughput tier's GET included), the webhook parser.
NOT_FOR_RUN = (
    "alembic",
    "aiohttp",
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "dripline.server",
    "dripline.fake",
    "dripline.planner",
    "dripline.whatsapp.webhooks",
    "dripline.whatsapp.aiohttp_transport",
    # The in-memory backend (tests, the simulator), phone-number metadata (quiet hours
    # by the recipient's country only).
    "dripline.store.memory",
    "phonenumbers",
    # What structlog loads with rich, for exception formatters dripline does not use
    # (`dripline.logs`): rich's traceback and pretty printer, pygments, attrs.
    "rich.traceback",
    "rich.pretty",
    "pygments",
    "attr",
    # SQLAlchemy's ORM, which its asyncio package's __init__ loads for sessions
    # (`dripline.store.sa_asyncio`).
    "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio.session",
    # The store's read models for operators (status, metrics, the server) and the
    # webhook processor's and the API's types: 21 dataclasses whose methods are generated
    # (compiled) at import, loaded on first use (`dripline.store.__getattr__`).
    "dripline.store.report_types",
    "dripline.store.webhook_types",
)
# Either database's dialect: what the run loads for one backend is the e2e test's
# (tests/e2e/test_run_startup_imports.py); building the command needs neither (the
# schema's partial indexes name both, so they are made on first use of the metadata).
DIALECTS = ("sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.sqlite", "asyncpg")
# rich's console: made when the CLI first prints (`run` prints after its sends).
PRINTING = ("rich",)
# Not needed before a command is chosen: no settings (pydantic) either.
NOT_FOR_THE_CLI = (
    *NOT_FOR_RUN,
    *DIALECTS,
    *PRINTING,
    "sqlalchemy",
    "dripline.store",
    "dripline.dispatcher",
    "dripline.settings",
    "pydantic",
    "pydantic_settings",
    "structlog",
)


def _modules_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


def test_importing_the_cli_loads_no_command() -> None:
    assert loaded(_modules_after("import dripline.cli"), NOT_FOR_THE_CLI) == []


def test_the_run_command_loads_only_what_the_dispatcher_needs() -> None:
    modules = _modules_after("import dripline.cli\ndripline.cli.build_app('run')")
    assert "dripline.dispatcher.engine" in modules  # it did build `run`
    assert loaded(modules, (*NOT_FOR_RUN, *DIALECTS, *PRINTING)) == []


def test_the_store_package_loads_sqlalchemys_asyncio_engine_without_its_orm() -> None:
    modules = _modules_after("import dripline.store")
    assert "sqlalchemy.ext.asyncio.engine" in modules
    assert loaded(modules, ("sqlalchemy.orm", *DIALECTS)) == []


def test_sqlalchemys_asyncio_package_is_whole_when_asked_for_the_rest() -> None:
    code = (
        "import dripline.store\n"
        "from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine\n"
        "import sqlalchemy.ext.asyncio as pkg\n"
        "from sqlalchemy.ext.asyncio.engine import create_async_engine as made\n"
        "assert create_async_engine is made and pkg.async_sessionmaker and AsyncSession\n"
        "assert pkg.AsyncSession is AsyncSession"
    )
    assert "sqlalchemy.orm" in _modules_after(code)


def test_the_schema_metadata_has_the_partial_indexes() -> None:
    code = (
        "from dripline.store.schema import metadata\n"
        "names = {i.name for t in metadata.tables.values() for i in t.indexes}\n"
        "assert {'ix_conversations_due', 'uq_conversations_active_phone_flow',"
        " 'ix_inbox_unprocessed'} <= names, names"
    )
    _modules_after(code)


def test_logging_imports_structlog_without_rich_and_rich_still_works() -> None:
    code = (
        "import dripline.logs, structlog\n"
        "assert 'rich' not in sys.modules and structlog.dev.rich is None\n"
        "from rich.console import Console\n"
        "Console()"
    )
    modules = _modules_after(code)
    assert "rich.console" in modules


def test_every_command_is_mapped_to_the_module_that_registers_it() -> None:
    found: dict[str, str] = {}
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        app = typer.Typer()
        __import__(f"dripline.cli.{module}", fromlist=["register"]).register(app)
        names = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
        for name in names:
            assert name is not None
            found[name] = module
    assert found == COMMAND_MODULES


def test_building_for_one_command_registers_that_command_only() -> None:
    app = build_app("status")
    assert [c.name for c in app.registered_commands] == ["status"]
    everything = build_app("--help")
    names = {c.name for c in everything.registered_commands}
    assert names | {g.name for g in everything.registered_groups} == set(COMMAND_MODULES)


def test_the_head_is_the_revision_nothing_builds_on() -> None:
    scripts = [
        'revision: str = "0002"\ndown_revision: str | None = "0001"\n',
        'revision = "0001"\ndown_revision = None\n',
        "revision: str = '0003'\ndown_revision: str | Sequence[str] | None = ('0002',)\n",
    ]
    assert head_from_scripts(scripts) == "0003"


def test_the_store_types_loaded_on_first_use_are_the_same_classes_everywhere() -> None:
    # `report_types` and `webhook_types` load when a name is first asked of the package,
    # of `store.types` or of `store.base`; every spelling must give the one class.
    import dripline.store as store
    import dripline.store.base as base
    import dripline.store.types as types
    from dripline.store import report_types, webhook_types

    for name in webhook_types.__all__:
        assert getattr(store, name) is getattr(types, name) is getattr(webhook_types, name)
    for name in report_types.__all__:
        assert getattr(store, name) is getattr(report_types, name)
    assert base.BacklogCounts is report_types.BacklogCounts
