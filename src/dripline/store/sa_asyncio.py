"""SQLAlchemy's asyncio engine without its ORM session, imported by `dripline.store` first.

The store needs `create_async_engine`, `AsyncEngine` and `AsyncConnection` only, from
`sqlalchemy.ext.asyncio.engine`. The package's `__init__` also imports its ORM session,
and with it `sqlalchemy.orm` whole: about 65 ms of CPU, 8% of `dripline run --once`'s
start-up, for sessions dripline never opens. So, on import, this registers the package
without running its `__init__`, loads the engine module into it, and leaves the rest to
the first use: any other name asked of the package (`AsyncSession`,
`async_sessionmaker`...) runs the real `__init__` into the same module object, then
answers. Code importing `sqlalchemy.ext.asyncio` sees the same package either way.

If the package is already imported, or its layout is not the one this expects (another
SQLAlchemy version), it is imported as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

__all__ = ["PACKAGE"]

PACKAGE = "sqlalchemy.ext.asyncio"
# The names the store takes from the package, all defined by its `engine` module.
ENGINE_NAMES = ("AsyncConnection", "AsyncEngine", "create_async_engine")


def _run_init(module: ModuleType) -> None:
    """The package's own `__init__`, into `module` (once)."""
    module.__dict__.pop("__getattr__", None)
    spec = module.__spec__
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(module)


def _register_without_init() -> None:
    parent = importlib.import_module("sqlalchemy.ext")
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    module = importlib.util.module_from_spec(spec)

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        _run_init(module)
        return getattr(module, name)

    sys.modules[PACKAGE] = module
    try:
        engine = importlib.import_module(f"{PACKAGE}.engine")
        for name in ENGINE_NAMES:
            setattr(module, name, getattr(engine, name))
    except (ImportError, AttributeError):
        # Not the layout this expects: the real package, imported as usual.
        del sys.modules[PACKAGE]
        for name in [m for m in sys.modules if m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        importlib.import_module(PACKAGE)
        return
    # Only now: while its submodules load, `from . import exc` asks the package for
    # `exc` first, which must not run the `__init__`.
    module.__dict__["__getattr__"] = __getattr__
    parent.__dict__["asyncio"] = module  # what the import system does for a submodule


if PACKAGE not in sys.modules:
    _register_without_init()
