"""`dripline config show`: the effective settings, secrets redacted."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from dripline.cli.common import console, handle_errors, print_json, settings_from
from dripline.settings import Preset

config_app = typer.Typer(help="Inspect dripline's settings.", no_args_is_help=True)


@config_app.command("show")
@handle_errors
def show(
    preset: Annotated[
        Preset | None, typer.Option(help="Apply a named preset (see the tuning guide).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Print the effective settings (flags > DRIPLINE_* env > dripline.toml > defaults)."""
    settings = settings_from(preset=preset)
    data = settings.redacted()
    preset_set = settings.preset_values()
    if as_json:
        print_json({"settings": data, "preset_set": preset_set})
        return
    table = Table(title="dripline settings", show_lines=False)
    table.add_column("setting")
    table.add_column("value")
    for key, value in data.items():
        mark = " (from preset)" if key in preset_set and settings.preset else ""
        table.add_row(key, f"{value}{mark}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
