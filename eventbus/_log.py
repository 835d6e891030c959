"""The library's structlog logger. eventbus logs through it and never
configures logging: that is the application's decision."""

from __future__ import annotations

from typing import Any

import structlog

logger: Any = structlog.get_logger("eventbus")
