"""The delivery in progress, so that publishing from inside a handler can set
causation and correlation ids without the user passing them.

`Delivery` is the per-delivery state: the record, and what the built-in
pipeline steps learn while delivering it (how many attempts were made, a
``where=``/``key=`` failure). The delivery pipeline is the only code that
sets `current_delivery`, and it resets it when the delivery ends.
"""

from __future__ import annotations

from contextvars import ContextVar

from .record import Record

__all__ = ["Delivery", "current_delivery"]


class Delivery:
    """One record on its way through one subscription's pipeline.

    Attributes:
        record: the record being delivered.
        owner: identifies the subscription run delivering it (compared by identity).
        attempts: handler calls made so far (set by the retry step).
        first_failed_at: when the first attempt failed, in ns since the epoch.
        rejection: the exception ``where=`` or ``key=`` raised for this record.
    """

    __slots__ = ("attempts", "first_failed_at", "owner", "record", "rejection")

    def __init__(self, record: Record, owner: object, rejection: Exception | None = None) -> None:
        self.record = record
        self.owner = owner
        self.rejection = rejection
        self.attempts = 1
        self.first_failed_at: int | None = None


current_delivery: ContextVar[Delivery | None] = ContextVar("eventbus_current_delivery", default=None)
