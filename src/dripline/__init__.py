"""dripline: scheduled WhatsApp question flows, on time, at full speed, exactly once."""

from typing import TYPE_CHECKING, Any

from dripline.errors import DriplineError

if TYPE_CHECKING:
    from dripline.settings import Settings, load_settings

__all__ = ["DriplineError", "Settings", "__version__", "load_settings"]


def __getattr__(name: str) -> Any:
    # Everything but the error tree is read when asked: every `import dripline.x` runs
    # this file first, and the settings (pydantic-settings, pydantic) were most of
    # `import dripline.cli` (162 of 194 ms), paid before a command was even chosen.
    if name in ("Settings", "load_settings"):
        from dripline import settings

        value: Any = getattr(settings, name)
    elif name == "__version__":
        # One source for the version: pyproject.toml, read back from the installed
        # metadata (an editable install has it too); only a bare source tree on
        # sys.path has none. importlib.metadata is a noticeable part of a start-up.
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("dripline")
        except PackageNotFoundError:  # pragma: no cover - not installed at all
            value = "0+unknown"
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
