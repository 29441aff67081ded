"""`dripline bench`: run the benchmarks (`python -m bench`) of a source checkout.

The benchmark lives beside the package, not in it (it needs the repository's `bench/`
and the `bench` extra, Procrastinate), so this command only finds the checkout and hands
its arguments to `python -m bench`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from dripline.cli.common import fail

__all__ = ["find_checkout", "register"]


def find_checkout() -> Path | None:
    """The source checkout holding `bench/` (from this file, else the working directory)."""
    candidates = [*Path(__file__).resolve().parents, Path.cwd()]
    for directory in candidates:
        if (directory / "bench" / "__main__.py").is_file() and (
            directory / "pyproject.toml"
        ).is_file():
            return directory
    return None


def register(app: typer.Typer) -> None:
    @app.command(
        "bench",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def bench(ctx: typer.Context) -> None:
        """Run the benchmark scenarios against the fake Cloud API (python -m bench).

        Options pass through: --scenario N (repeatable), --quick, --out DIR, --json,
        --no-readme. Needs a source checkout and `pip install -e '.[bench]'`.
        """
        root = find_checkout()
        if root is None:
            raise fail(
                "dripline bench needs a source checkout (its bench/ directory); "
                "run it from the repository, or use `make bench` there"
            )
        args = [str(a) for a in ctx.args]
        code = subprocess.call([sys.executable, "-m", "bench", *args], cwd=root)  # noqa: S603
        raise typer.Exit(code)
