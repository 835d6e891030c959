"""`DeadLetter`: a delivery that failed for good, as the store keeps it.

The store contract names it, so it depends on nothing above `Record`, and
the store modules import it from here (the rest of `eventbus.deadletters`
sits above the store).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from ..record import Record

__all__ = ["DeadLetter"]


@dataclass(frozen=True)
class DeadLetter:
    """A delivery that failed for good.

    Attributes:
        id: the letter's own id (what `DeadLetters.redrive` and ``purge`` take).
        subscription: the name of the subscription whose handler failed.
        record: the record that was being delivered.
        error_type: qualified name of the last exception's class.
        error_message: ``str()`` of the last exception.
        traceback: the formatted traceback of the last exception.
        attempts: how many times the handler was called.
        first_failed_at / last_failed_at: aware UTC datetimes.
    """

    id: UUID
    subscription: str
    record: Record
    error_type: str
    error_message: str
    traceback: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
