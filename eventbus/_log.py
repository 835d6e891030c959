"""The library's logger: quiet by default, and the application's to direct.

eventbus never configures logging. Where its log lines go depends on what
the application did:

- The application configured structlog (`structlog.is_configured`): the lines
  go through the application's own structlog pipeline, with its processors,
  renderer and level filter.
- Otherwise, they go to the standard library logger named ``"eventbus"``
  (`LOGGER_NAME`) as ``"<event> key=value ..."`` messages, so the
  application's `logging` configuration decides, and
  ``logging.getLogger("eventbus").setLevel(...)`` works. An application that
  configured nothing sees warnings and errors only (Python's last-resort
  handler), never the debug line of every publish.

The choice is made per call, so configuring logging after importing eventbus
works. The one line per publish, at debug level, is asked for once when the
bus starts (`Logger.is_enabled_for`), so a disabled level costs the publish
path nothing.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["LOGGER_NAME", "Logger", "logger"]

LOGGER_NAME = "eventbus"
"""The name of the standard library logger eventbus logs to when structlog is not configured."""

_stdlib = logging.getLogger(LOGGER_NAME)


def _as_message(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> str:
    """``published seq=3 type='order.placed'``: the event, then its fields."""
    event = event_dict.pop("event", "")
    fields = " ".join(f"{key}={value!r}" for key, value in event_dict.items())
    return f"{event} {fields}" if fields else str(event)


_to_stdlib: Any = structlog.wrap_logger(
    _stdlib,
    processors=[structlog.stdlib.filter_by_level, _as_message],
    wrapper_class=structlog.stdlib.BoundLogger,
)
_to_structlog: Any = structlog.get_logger(LOGGER_NAME)


def _target() -> Any:
    return _to_structlog if structlog.is_configured() else _to_stdlib


class Logger:
    """eventbus's logger (see the module docstring for where its lines go)."""

    def debug(self, event: str, **fields: Any) -> None:
        _target().debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        _target().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        _target().warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        _target().error(event, **fields)

    def critical(self, event: str, **fields: Any) -> None:
        _target().critical(event, **fields)

    def bind(self, **fields: Any) -> Any:
        """A logger with ``fields`` bound to every line, on the current target."""
        return _target().bind(**fields)

    def is_enabled_for(self, level: int) -> bool:
        """Whether a line at ``level`` (a `logging` level number) would be emitted now."""
        if not structlog.is_configured():
            return _stdlib.isEnabledFor(level)
        bound = _to_structlog.bind()
        check = getattr(bound, "is_enabled_for", None) or getattr(bound, "isEnabledFor", None)
        return True if check is None else bool(check(level))


logger = Logger()
"""The logger every eventbus module uses."""
