"""`DeadLetters` (``bus.dead_letters``): list, redrive and purge stored dead letters.

A redrive delivers each letter again to its own subscription only, through
that subscription's pipeline below the dead-letter step (a `Redeliverer`),
and ends a failure itself, with `bury`. Each letter is *claimed* before it
is delivered, so redrives running at the same time deliver it once; the old
letter is deleted only after the delivery succeeded or its replacement
(counting every attempt) is stored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from typing import Protocol
from uuid import UUID

from .._log import logger
from ..failures import is_failure
from ..record import Record
from ..store.base import Store, check_letter_ids
from ._bury import bury
from .letter import DeadLetter

__all__ = ["DeadLetters", "Redeliverer"]


class Redeliverer(Protocol):
    """What a redrive needs of a subscription's delivery pipeline."""

    async def redeliver(self, record: Record) -> None:
        """Deliver ``record`` again below the dead-letter step, raising what the delivery raises."""
        ...


class _Outcome(enum.Enum):
    """How a redriven letter ended."""

    DELIVERED = "delivered"
    """The handler succeeded: the old letter can go."""
    REPLACED = "replaced"
    """It failed again and a new letter (counting every attempt) is stored: the old one can go."""
    KEPT = "kept"
    """It failed again and the new letter could not be stored: the old one stays."""


class DeadLetters:
    """``bus.dead_letters``: inspect, redrive and purge stored dead letters.

    Args:
        store: the bus's current store.
        pipeline: the pipeline of the running subscription with that name, or None.
    """

    def __init__(self, store: Callable[[], Store], pipeline: Callable[[str], Redeliverer | None]) -> None:
        self._store = store
        self._pipeline = pipeline
        self._claimed: set[UUID] = set()
        self._settled: set[UUID] = set()  # deleted by a redrive still in flight
        self._redrives = 0

    async def list(self, subscription: str | None = None) -> Sequence[DeadLetter]:
        """Stored dead letters, oldest first, optionally of one subscription."""
        return await self._store().dead_letters(subscription)

    async def redrive(self, ids: Collection[UUID] | None = None) -> int:
        """Deliver dead letters again, each to its own subscription only.

        ``ids=None`` redrives every letter. A letter is removed when its new
        delivery succeeds; one that fails again is replaced by a new letter
        that counts all attempts (the old one stays if the new one cannot be
        stored). Letters of subscriptions that are not running on this bus,
        and letters another redrive is delivering, are left alone. Returns how
        many deliveries succeeded.
        """
        wanted = None if ids is None else check_letter_ids(ids)
        store = self._store()
        self._redrives += 1
        try:
            succeeded = 0
            for letter in await store.dead_letters():
                if wanted is not None and letter.id not in wanted:
                    continue
                if letter.id in self._claimed or letter.id in self._settled:
                    continue
                pipeline = self._pipeline(letter.subscription)
                if pipeline is None:
                    logger.warning(
                        "dead letter's subscription is not running on this bus", subscription=letter.subscription
                    )
                    continue
                self._claimed.add(letter.id)
                try:
                    outcome = await _redeliver(store, pipeline, letter)
                    if outcome is not _Outcome.KEPT:
                        await store.delete_dead_letters([letter.id])
                        self._settled.add(letter.id)
                finally:
                    self._claimed.discard(letter.id)
                succeeded += outcome is _Outcome.DELIVERED
            return succeeded
        finally:
            self._redrives -= 1
            if not self._redrives:
                self._settled.clear()

    async def purge(self, ids: Collection[UUID] | None = None) -> int:
        """Delete dead letters (all of them when ``ids`` is None); returns how many."""
        store = self._store()
        if ids is None:
            return await store.delete_dead_letters([letter.id for letter in await store.dead_letters()])
        return await store.delete_dead_letters(check_letter_ids(ids))


async def _redeliver(store: Store, pipeline: Redeliverer, letter: DeadLetter) -> _Outcome:
    """Deliver ``letter`` again; a failure is buried as a letter that replaces it."""
    try:
        await pipeline.redeliver(letter.record)
    except BaseException as exc:
        if not is_failure(exc):
            raise
        stored = await bury(store, letter.subscription, letter.record, exc, earlier=letter)
        return _Outcome.REPLACED if stored else _Outcome.KEPT
    return _Outcome.DELIVERED
