"""`MemoryStore`: the default store, a list in this process's memory."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from .base import DEFAULT_PAGE_SIZE, StoreFeatures, check_letter_ids, check_read_arguments

if TYPE_CHECKING:
    from ..deadletter import DeadLetter
    from ..record import Record

__all__ = ["MemoryStore"]


def _seq_of(record: Record) -> int:
    return record.seq


class MemoryStore:
    """Keeps every record, checkpoint and dead letter in memory.

    Fast and gapless, gone with the process: for tests, for tools, and for
    services that want replay within one run. URL: ``memory://``.
    """

    features = StoreFeatures(persistent=False, shared_between_processes=False, gapless=True)

    def __init__(self) -> None:
        self._records: list[Record] = []
        self._last_seq = 0
        self._checkpoints: dict[str, int] = {}
        self._dead_letters: dict[UUID, DeadLetter] = {}

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the contents stay readable until garbage-collected."""

    async def append(self, records: Sequence[Record]) -> None:
        self.append_now(records)

    def append_now(self, records: Sequence[Record]) -> None:
        """`append` without waiting: nothing here ever waits, so the bus calls
        this directly, one coroutine less per publish (see `Store.append`)."""
        seq = self._last_seq
        for record in records:
            seq += 1
            record.seq = seq
        self._last_seq = seq
        self._records.extend(records)

    async def read(
        self,
        from_seq: int = 1,
        *,
        to_seq: int | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> Sequence[Record]:
        check_read_arguments(from_seq, limit)
        records = self._records
        start = bisect_left(records, from_seq, key=_seq_of)
        stop = len(records) if to_seq is None else bisect_left(records, to_seq + 1, key=_seq_of)
        if types is None:
            return records[start : min(stop, start + limit)]
        page: list[Record] = []
        for index in range(start, stop):
            record = records[index]
            if record.type in types:
                page.append(record)
                if len(page) == limit:
                    break
        return page

    async def head(self) -> int:
        return self._last_seq

    async def wait_for_append(self, after_seq: int) -> None:
        """Never called: a memory store is not shared between processes."""
        raise NotImplementedError("MemoryStore is not shared between processes")

    async def load_checkpoint(self, name: str) -> int | None:
        return self._checkpoints.get(name)

    async def save_checkpoints(self, positions: Mapping[str, int]) -> None:
        self._checkpoints.update(positions)

    async def checkpoints(self) -> Mapping[str, int]:
        return dict(self._checkpoints)

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            self._dead_letters[letter.id] = letter

    async def dead_letters(self, subscription: str | None = None) -> Sequence[DeadLetter]:
        letters = self._dead_letters.values()
        if subscription is None:
            return list(letters)
        return [letter for letter in letters if letter.subscription == subscription]

    async def delete_dead_letters(self, ids: Collection[UUID]) -> int:
        deleted = 0
        for letter_id in check_letter_ids(ids):
            if self._dead_letters.pop(letter_id, None) is not None:
                deleted += 1
        return deleted

    def delete_newest(self, count: int) -> None:
        """Drop the ``count`` newest records (their seqs are not reused).

        For tests of what a store does after rows were deleted.
        """
        if count > 0:
            del self._records[-count:]
