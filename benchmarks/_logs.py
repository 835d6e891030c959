"""What every benchmark does first, as an application would in production."""

from __future__ import annotations

import logging

import structlog


def quiet_logs() -> None:
    """Keep structlog's output to warnings: its unconfigured default prints the bus's debug lines."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
