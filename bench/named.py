"""Scenarios run only when named (`--scenario soak`, `--scenario chaos-...`): issue 13's
soak and chaos runs, long or disruptive, so never part of a plain `python -m bench`."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import chaos, soak


async def run_soak(b: Any, args: argparse.Namespace) -> None:
    out: Path = args.out or Path("bench/results")
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    for backend in args.backend or ["sqlite"]:
        log = out / f"soak-{backend}-{args.messages}-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
        b.progress.note(f"soak {backend}: samples in {log}")
        await soak.soak(b, backend, args.messages, args.dripline_src, log)


def _chaos(name: str) -> Callable[[Any, argparse.Namespace], Awaitable[None]]:
    async def run(b: Any, args: argparse.Namespace) -> None:
        await chaos.run(b, name, args.backend)

    return run


NAMED: dict[str, Callable[[Any, argparse.Namespace], Awaitable[None]]] = {
    "soak": run_soak,
    **{name: _chaos(name) for name in chaos.SCENARIOS},
}
