"""dripline: scheduled WhatsApp question flows, on time, at full speed, exactly once."""

from typing import Any

from dripline.errors import DriplineError
from dripline.settings import Settings, load_settings

__all__ = ["DriplineError", "Settings", "__version__", "load_settings"]


def __getattr__(name: str) -> Any:
    # One source for the version: pyproject.toml, read back from the installed metadata
    # (an editable install has it too); only a bare source tree on sys.path has none.
    # Read when asked: importlib.metadata is a noticeable part of every start-up.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("dripline")
        except PackageNotFoundError:  # pragma: no cover - not installed at all
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
