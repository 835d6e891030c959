"""`DeadLetters` (``bus.dead_letters``): list, redrive and purge stored dead letters.

A redrive delivers each letter again to its own subscription only, through
that subscription's pipeline below the dead-letter step. Each letter is
*claimed* before it is delivered, so redrives running at the same time
deliver it once; the old letter is deleted only after the delivery succeeded
or its replacement (counting every attempt) is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from uuid import UUID

from ._log import logger
from .deadletter import DeadLetter
from .delivery.pipeline import Pipeline, Redelivery
from .store.base import Store, check_letter_ids

__all__ = ["DeadLetters"]


class DeadLetters:
    """``bus.dead_letters``: inspect, redrive and purge stored dead letters.

    Args:
        store: the bus's current store.
        pipeline: the pipeline of the running subscription with that name, or None.
    """

    def __init__(self, store: Callable[[], Store], pipeline: Callable[[str], Pipeline | None]) -> None:
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
                    outcome = await pipeline.redeliver(letter)
                    if outcome is not Redelivery.KEPT:
                        await store.delete_dead_letters([letter.id])
                        self._settled.add(letter.id)
                finally:
                    self._claimed.discard(letter.id)
                succeeded += outcome is Redelivery.DELIVERED
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
