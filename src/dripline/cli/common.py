"""Shared CLI plumbing: settings from flags, one-line errors, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer

from dripline.errors import DriplineError, InputError
from dripline.settings import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["console", "err_console", "fail", "handle_errors", "print_json", "settings_from"]

P = ParamSpec("P")
R = TypeVar("R")

# Made on first use: rich's console is most of rich's import (~20 ms), and `run --once`
# prints only after its sends (module __getattr__; `fail` goes through it too).
console: Console
err_console: Console


def _console(name: str) -> Console:
    value: Console | None = globals().get(name)
    if value is None:
        from rich.console import Console

        value = globals()[name] = Console(stderr=name == "err_console")
    return value


def __getattr__(name: str) -> Any:
    if name in ("console", "err_console"):
        return _console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    _console("err_console").print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn dripline's own errors into a one-line message and exit code 2 (user errors)
    or 1 (service errors), never a stack trace."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            raise fail(str(exc), 2) from None
        except DriplineError as exc:
            raise fail(str(exc), 1) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper


def settings_from(**flags: Any) -> Settings:
    """Settings with CLI flags (None = not given) on top of env, file and defaults."""
    return load_settings(**flags)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, one document."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, sort_keys=False) + "\n")
