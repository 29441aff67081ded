"""Scenarios run only when named (`--scenario soak`, `--scenario chaos-...`): issue 13's
soak and chaos runs, long or disruptive, so never part of a plain `python -m bench`."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from bench import soak


async def run_soak(b: Any, args: argparse.Namespace) -> None:
    for backend in args.backend or ["sqlite"]:
        await soak.soak(b, backend, args.messages, args.dripline_src)


NAMED: dict[str, Callable[[Any, argparse.Namespace], Awaitable[None]]] = {
    "soak": run_soak,
}
