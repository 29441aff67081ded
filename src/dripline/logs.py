"""Structured logging (structlog): console or JSON lines, secrets scrubbed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

if "structlog" in sys.modules or "rich" in sys.modules:
    import structlog
else:
    # structlog loads rich at import when it is installed (typer brings it): its
    # traceback and pretty printer, pygments and attrs, ~45 ms of CPU, 6% of
    # `run --once`'s start-up, for exception formatters dripline never uses (exceptions
    # are rendered to text by `format_exc_info` before any renderer). A None entry makes
    # `import rich` fail inside structlog's import only; rich stays importable after.
    # `dripline.cli.build_app` imports this module first, before any that logs.
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        del sys.modules["rich"]

__all__ = ["configure_logging", "redactor"]

REDACTED = "***"


def redactor(secrets: Iterable[str]) -> structlog.types.Processor:
    """A processor that replaces every occurrence of a secret value in any string field.

    Belt and braces: secrets are never passed to the logger on purpose, but an exception
    text or a URL could still carry one.
    """
    values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def process(
        _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not values:
            return event
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = scrub(value)
            elif isinstance(value, BaseException):
                event[key] = scrub(repr(value))
        return event

    return process


def configure_logging(
    *, fmt: str = "console", level: str = "INFO", secrets: Iterable[str] = ()
) -> None:
    """Route structlog (and stdlib logging) to stderr as console text or JSON lines."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
