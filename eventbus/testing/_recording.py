"""`RecordingStore`: a store that keeps a note of what one test run wrote to it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from uuid import UUID

import anyio

from ..deadletters import DeadLetter
from ..record import Record
from ..store import DEFAULT_PAGE_SIZE, CompactResult, HistoryNeed, LeaseFence, Store, StoreFeatures

__all__ = ["RecordingStore"]


class RecordingStore:
    """Wraps a `Store`, passing every call through, and remembers the records
    appended and the dead letters added (minus those deleted) through it.

    What the wrapped store held before is not noted: `appended` and
    `dead_letters` are what this run wrote.

    Its features are the wrapped store's, except ``immediate_append``: every
    append goes through `append`, where it is noted; and ``transactions``:
    an append inside the application's transaction would not be noted (nor
    could the test know whether it commits), so a `TestBus` refuses
    ``transaction=`` with `TransactionError`.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.features: StoreFeatures = replace(store.features, immediate_append=False, transactions=False)
        self.appended: list[Record] = []
        self.dead_letters_added: dict[UUID, DeadLetter] = {}
        self._grown: anyio.Event | None = None  # set when `appended` grows, for `wait_past`

    @property
    def first_seq(self) -> int:
        return self.store.first_seq

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        already = await self.store.append(records)
        self.appended.extend(record for index, record in enumerate(records) if index not in already)
        if self._grown is not None and len(already) < len(records):
            self._grown.set()
            self._grown = None
        return already

    async def wait_past(self, count: int) -> None:
        """Return once more than ``count`` records have been noted in `appended`."""
        while len(self.appended) <= count:
            if self._grown is None:
                self._grown = anyio.Event()
            await self._grown.wait()

    async def read(
        self,
        from_seq: int = 1,
        *,
        to_seq: int | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> Sequence[Record]:
        return await self.store.read(from_seq, to_seq=to_seq, types=types, limit=limit)

    async def head(self) -> int:
        return await self.store.head()

    async def compact(self, *, keep: int | None = None, keep_age: timedelta | None = None) -> CompactResult:
        return await self.store.compact(keep=keep, keep_age=keep_age)

    def hold_history(self, needed: HistoryNeed | None) -> None:
        self.store.hold_history(needed)

    async def wait_for_append(self, after_seq: int) -> None:
        await self.store.wait_for_append(after_seq)

    async def load_checkpoint(self, name: str) -> int | None:
        return await self.store.load_checkpoint(name)

    async def save_checkpoints(self, positions: Mapping[str, int], *, fence: LeaseFence | None = None) -> None:
        await self.store.save_checkpoints(positions, fence=fence)

    async def checkpoints(self) -> Mapping[str, int]:
        return await self.store.checkpoints()

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        return await self.store.acquire_lease(name, holder, ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        await self.store.release_lease(name, holder)

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        await self.store.add_dead_letters(letters)
        self.dead_letters_added.update((letter.id, letter) for letter in letters)

    async def dead_letters(self, subscription: str | None = None) -> Sequence[DeadLetter]:
        return await self.store.dead_letters(subscription)

    async def delete_dead_letters(self, ids: Collection[UUID]) -> int:
        deleted = await self.store.delete_dead_letters(ids)
        for letter_id in ids:
            self.dead_letters_added.pop(letter_id, None)
        return deleted
