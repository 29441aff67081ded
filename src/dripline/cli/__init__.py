"""The `dripline` command. Each area registers its commands from its own module.

`main` registers only the module of the command being run: importing every area (the
server, the fake, the planner, Alembic...) cost `dripline run --once` most of its
start-up, paid on every cron run. `app`, every command, is built on first use (tests,
`--help` without a command).
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Any

import typer

# The module that registers each top-level command, through its `register(app)`; the
# order is `--help`'s (tests/unit/test_cli_imports.py checks the map is complete).
COMMAND_MODULES: dict[str, str] = {
    "config": "config_cmd",
    "flows": "flows_cmd",
    "fake-whatsapp": "fake",
    "run": "run",
    "demo": "demo_cmd",
    "bench": "bench",
    "plan": "plan",
    "db": "db",
    "forget": "retention",
    "enroll": "enroll",
    "import": "enroll",
    "status": "status",
    "serve": "serve",
    "export": "export",
    "results": "results_cmd",
    "openapi": "openapi_cmd",
}


def _version(value: bool) -> None:
    if value:
        from dripline import __version__

        typer.echo(f"dripline {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """dripline: scheduled WhatsApp question flows."""


def build_app(command: str | None = None) -> typer.Typer:
    """The CLI with `command`'s module only, or with every command (None, unknown)."""
    app = typer.Typer(
        name="dripline",
        help=(
            "Send scheduled WhatsApp question flows on time, at the Cloud API's full speed, "
            "exactly once. Settings come from flags, DRIPLINE_* environment variables and "
            "dripline.toml; see `dripline config show`."
        ),
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_root)
    # Before any command's module: structlog then loads without rich (see the module).
    importlib.import_module("dripline.logs")
    if command in COMMAND_MODULES:
        modules = [COMMAND_MODULES[command]]
    else:
        modules = list(dict.fromkeys(COMMAND_MODULES.values()))
    for name in modules:
        importlib.import_module(f"dripline.cli.{name}").register(app)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        app = globals()["app"] = build_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point."""
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    # Loading a command's modules builds some 70,000 objects the GC tracks (modules,
    # classes, SQLAlchemy tables and statements) that live as long as the process; the
    # cyclic GC's passes over them while they load find nothing to free and cost about a
    # tenth of `run --once`'s start-up (CPU of the imports, 0.81 -> 0.73 s under load).
    # So none runs while they load, and what they built is frozen: later collections
    # (a long `run`) skip it.
    gc.disable()
    try:
        app = build_app(command)
    finally:
        gc.freeze()
        gc.enable()
    app()
