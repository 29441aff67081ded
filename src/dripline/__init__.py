"""dripline: scheduled WhatsApp question flows, on time, at full speed, exactly once."""

from dripline.errors import DriplineError
from dripline.settings import Settings, load_settings

__all__ = ["DriplineError", "Settings", "__version__", "load_settings"]

__version__ = "0.1.0"
