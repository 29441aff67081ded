"""The `dripline` command. Each area registers its commands from its own module."""

from __future__ import annotations

import importlib

import typer

from dripline import __version__

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

# Modules that add commands to `app`, each through a `register(app)` function.
_COMMAND_MODULES = [
    "config_cmd",
    "flows_cmd",
    "fake",
    "run",
    "demo_cmd",
    "bench",
    "plan",
    "db",
    "retention",
    "enroll",
    "status",
    "serve",
    "export",
    "results_cmd",
    "openapi_cmd",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dripline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """dripline: scheduled WhatsApp question flows."""


for _name in _COMMAND_MODULES:
    importlib.import_module(f"dripline.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()
