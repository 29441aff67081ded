"""The bench's children read dripline's bytecode, as a deployed dripline does (pip
compiles an installed wheel): without it, under PYTHONDONTWRITEBYTECODE=1, every
`dripline run --once` the bench timed compiled every dripline module first."""

from __future__ import annotations

import compileall
import importlib.util
from pathlib import Path

import pytest
from bench.harness import compile_dripline

import dripline

PACKAGE = Path(dripline.__file__).parent


def _cached(module: str) -> Path:
    cached = importlib.util.cache_from_source(str(PACKAGE / module))
    return Path(cached)


def test_the_bench_byte_compiles_dripline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_BYTECODE", raising=False)
    for module in ("cli/run.py", "store/sqlite_lane.py"):
        _cached(module).unlink(missing_ok=True)
    compile_dripline()
    for module in ("cli/run.py", "store/sqlite_lane.py"):
        assert _cached(module).stat().st_mtime >= (PACKAGE / module).stat().st_mtime


def test_bench_bytecode_0_leaves_the_tree_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Asked of compileall rather than of the files: another test process importing
    # dripline may write bytecode meanwhile (when PYTHONDONTWRITEBYTECODE is unset).
    calls: list[object] = []
    monkeypatch.setattr(compileall, "compile_dir", lambda *a, **k: calls.append(a))
    monkeypatch.setenv("BENCH_BYTECODE", "0")
    compile_dripline()
    assert calls == []
    monkeypatch.setenv("BENCH_BYTECODE", "1")
    compile_dripline()
    assert len(calls) == 1
