"""Dead letters: deliveries that failed for good, kept in the store.

A delivery that still fails after its last retry, times out on its last
attempt, or whose event cannot even be decoded becomes a `DeadLetter` of its
subscription instead of vanishing. `DeadLetters` (``bus.dead_letters``) lists,
redrives and purges them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from .record import Record

if TYPE_CHECKING:
    from .bus import EventBus

__all__ = ["DeadLetter", "DeadLetters"]


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


class DeadLetters:
    """``bus.dead_letters``: inspect, redrive and purge stored dead letters."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    async def list(self, subscription: str | None = None) -> Sequence[DeadLetter]:
        """Stored dead letters, oldest first, optionally of one subscription."""
        return await self._bus.store.dead_letters(subscription)

    async def redrive(self, ids: Collection[UUID] | None = None) -> int:
        """Deliver dead letters again, each to its own subscription only.

        ``ids=None`` redrives every letter. A letter is removed when its new
        delivery succeeds; one that fails again is replaced by a new letter
        that counts all attempts. Letters of subscriptions that do not exist on
        this bus are left alone. Returns how many deliveries succeeded.
        """
        return await self._bus._redrive(ids)

    async def purge(self, ids: Collection[UUID] | None = None) -> int:
        """Delete dead letters (all of them when ``ids`` is None); returns how many."""
        store = self._bus.store
        if ids is None:
            ids = [letter.id for letter in await store.dead_letters()]
        return await store.delete_dead_letters(ids)
