"""How retry tells the dead-letter step about the attempts behind a failure.

The failure itself travels as the exception; the attempt count and the time
of the first failure ride along on it, so no per-delivery object is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Attempts", "attempts_of", "note_attempts"]

_ATTRIBUTE = "__eventbus_attempts__"


@dataclass(frozen=True)
class Attempts:
    """How many times a handler was called, and when it first failed (ns)."""

    count: int
    first_failed_at: int


def note_attempts(exc: BaseException, count: int, first_failed_at: int) -> None:
    """Record on ``exc`` that it ended ``count`` attempts, the first failing at ``first_failed_at``."""
    setattr(exc, _ATTRIBUTE, Attempts(count, first_failed_at))


def attempts_of(exc: BaseException) -> Attempts | None:
    """What `note_attempts` recorded on ``exc``, if anything."""
    found = getattr(exc, _ATTRIBUTE, None)
    return found if isinstance(found, Attempts) else None
