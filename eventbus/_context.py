"""The delivery in progress, so that publishing from inside a handler can set
causation and correlation ids without the user passing them, and the
attempts behind a failing delivery.

`current_record` is the record (or its entry, see `eventbus._entry`) whose
handler is running; the delivery pipeline is the only code that sets it.
`current_attempts` is set by the retry step only when an attempt fails, and
read by the dead-letter step: the attempt count travels with the delivery it
belongs to (`Attempts.record`), never on the exception, which a handler may
raise again for another one.
"""

from __future__ import annotations

from contextvars import ContextVar

from ._entry import Item
from .record import Record

__all__ = ["Attempts", "current_attempts", "current_record"]


class Attempts:
    """How often one delivery's handler was called, and when it first failed.

    Attributes:
        record: the record being delivered.
        count: handler calls made so far.
        first_failed_at: when the first attempt failed, in ns since the epoch.
    """

    __slots__ = ("count", "first_failed_at", "record")

    def __init__(self, record: Record, first_failed_at: int) -> None:
        self.record = record
        self.count = 1
        self.first_failed_at = first_failed_at

    def failed(self, attempt: int) -> None:
        """Attempt number ``attempt`` failed (the count of calls made so far)."""
        self.count = attempt


current_record: ContextVar[Item | None] = ContextVar("eventbus_current_record", default=None)
current_attempts: ContextVar[Attempts | None] = ContextVar("eventbus_current_attempts", default=None)
