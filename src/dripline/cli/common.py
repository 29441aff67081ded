"""Shared CLI plumbing: settings from flags, one-line errors, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from dripline.errors import DriplineError, InputError
from dripline.settings import Settings, load_settings

__all__ = ["console", "err_console", "fail", "handle_errors", "print_json", "settings_from"]

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
