"""dripline: scheduled WhatsApp question flows, on time, at full speed, exactly once."""

from importlib.metadata import PackageNotFoundError, version

from dripline.errors import DriplineError
from dripline.settings import Settings, load_settings

__all__ = ["DriplineError", "Settings", "__version__", "load_settings"]

# One source for the version: pyproject.toml, read back from the installed metadata (an
# editable install has it too). Only a bare source tree on sys.path has none.
try:
    __version__ = version("dripline")
except PackageNotFoundError:  # pragma: no cover - not installed at all
    __version__ = "0+unknown"
