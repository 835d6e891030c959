"""What ``eventbus --version`` prints: one place for the command and for its fallback without the ``cli`` extra."""

from __future__ import annotations

from .. import __version__

__all__ = ["VERSION_LINE"]

VERSION_LINE = f"eventbus {__version__}"
"""What ``eventbus --version`` prints, with or without the ``cli`` extra."""
