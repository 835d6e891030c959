"""`MemoryStore`: the default store, a list in this process's memory."""

from __future__ import annotations

import math
import sys
import time
from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .._entry import Entry, Item, id_of, is_entry, record_of, recorded_at_ns_of, seq_of, type_of
from ..record import Record
from .base import (
    DEFAULT_PAGE_SIZE,
    LeaseFence,
    StoreFeatures,
    check_lease_ttl,
    check_letter_ids,
    check_read_arguments,
    lease_lost,
)
from .retention import (
    DEFAULT_MAX_RECORDS,
    CompactionStep,
    CompactResult,
    HistoryNeed,
    Hold,
    Retention,
    history_truncated,
    needed_hold,
)

if TYPE_CHECKING:
    from ..deadletters.letter import DeadLetter

__all__ = ["MemoryStore"]


_MIN_SLACK = 1_024
_SLACK_DIVISOR = 16
"""Dropped records leave the list in one cut once they are a sixteenth of what
it holds (at least `_MIN_SLACK`): each drop costs O(1), and the list's
memory stays within a sixteenth of the bound."""


class MemoryStore:
    """Keeps the newest records, every checkpoint and dead letter in memory.

    Fast and gapless, gone with the process: for tests, for tools, and for
    services that want replay within one run. URL: ``memory://``.

    It declares ``immediate_append``: the bus's publish calls `append_now`,
    `append_new` and `append_entry` (`ImmediateAppend`) instead of awaiting
    `append`.

    Subclasses: a subclass whose `append`, `append_now`, `append_new` or
    `append_entry` is not this class's own (overridden in its body, a base or
    a mixin: to count appends, to fail them, to yield inside them) and whose
    class body does not assign ``features`` gets ``features.immediate_append``
    False when the class is created, so every append goes through its
    `append` as it expects. A subclass that keeps its appends consistent with
    each other and wants them called at once says so in its own body
    (``features = replace(MemoryStore.features, immediate_append=True)``).

    Args:
        max_records: the hard bound: past it, each append drops the oldest
            records, whatever still needs them (a subscription reading them
            back counts what it lost as dropped). ``None`` keeps everything,
            so memory grows with every event (about 800 bytes a small event).
    """

    features = StoreFeatures(
        persistent=False, shared_between_processes=False, gapless=True, bounded=True, immediate_append=True
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Withdraw ``immediate_append`` from a subclass that replaces an append
        without declaring its ``features`` (see the class docstring)."""
        super().__init_subclass__(**kwargs)
        replaces_an_append = (
            cls.append is not MemoryStore.append
            or cls.append_now is not MemoryStore.append_now
            or cls.append_new is not MemoryStore.append_new
            or cls.append_entry is not MemoryStore.append_entry
        )
        if replaces_an_append and "features" not in vars(cls) and cls.features.immediate_append:
            cls.features = replace(cls.features, immediate_append=False)

    def __init__(self, max_records: int | None = DEFAULT_MAX_RECORDS) -> None:
        if max_records is not None and (
            isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1
        ):
            raise ValueError(f"max_records must be an int >= 1 or None (keep everything), got {max_records!r}")
        self._max_records = max_records
        self._records: list[Item] = []
        """Records, or entries (see `append_entry`), which `read` replaces by
        their records: the first read of an entry builds its `Record`, later
        reads return that same object."""
        self._start = 0  # index in _records of the first record still held
        self._first_seq = 1
        self._last_seq = 0
        self._full_after = _full_after(0, 0, max_records)
        """The newest seq past which an append must drop (see `_full_after`)."""
        self._seqs: dict[int, int] = {}
        """The seq of each held record before `_unindexed`, by its event id (as an int): ids are unique."""
        self._unindexed = 0
        """The index in _records from which held items are not in `_seqs` yet (see `_index`)."""
        self._checkpoints: dict[str, int] = {}
        self._leases: dict[str, tuple[str, float, int]] = {}
        """name -> (holder, expiry on the monotonic clock, fencing token); a released lease stays, expired."""
        self._dead_letters: dict[UUID, DeadLetter] = {}
        self._needed: HistoryNeed | None = None

    def __repr__(self) -> str:
        return f"MemoryStore(max_records={self.max_records!r})"

    @property
    def max_records(self) -> int | None:
        """The hard bound given to the constructor (None: unbounded)."""
        return self._max_records

    @property
    def first_seq(self) -> int:
        """The first seq still held (1 until the bound or a compaction removed anything)."""
        return self._first_seq

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Forget the registered `HistoryNeed`; the contents stay readable until garbage-collected."""
        self._needed = None

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        return self.append_now(records)

    def append_now(self, records: Sequence[Record]) -> Collection[int]:
        """`append` without waiting: nothing here ever waits, so the bus calls
        this directly, one coroutine less per publish (see `ImmediateAppend`)."""
        seqs = self._index()
        seq = self._last_seq
        already: list[int] = []
        for index, record in enumerate(records):
            key = id_of(record)
            stored = seqs.get(key)
            if stored is None:
                seq += 1
                record.seq = seqs[key] = seq
            else:
                record.seq = stored
                already.append(index)
        self._last_seq = seq
        held = self._records
        held.extend([records[index] for index in range(len(records)) if index not in already] if already else records)
        self._unindexed = len(held)
        if seq > self._full_after:
            self._drop(seq - self._full_after)
        return already

    def append_new(self, records: Sequence[Record]) -> None:
        """`append_now` of records under ids the bus just made (see
        `ImmediateAppend.append_new`): kept unindexed, as entries are (see
        `_index`). Looking each id up, and indexing it, at every such append
        cost a publish-to-handled with ``retry=Retry()`` and ``concurrency=4``
        8 184 instructions (30 024 against 21 840, CPython 3.11)."""
        seq = self._last_seq
        for record in records:
            seq += 1
            record.seq = seq
        self._last_seq = seq
        self._records.extend(records)
        if seq > self._full_after:
            self._drop(seq - self._full_after)

    def append_entry(self, event: Any, type: str, version: int, event_id: int, recorded_at_ns: int) -> Entry:
        """Append an event published outside a handler, without headers, as an
        entry (see `eventbus._entry`): what the bus's publish calls instead of
        `append_now` when no subscription needs the `Record` itself (see
        `ImmediateAppend`). The entry is kept as it is; `read` builds its
        `Record` when first asked for it."""
        seq = self._last_seq = self._last_seq + 1
        entry = (seq, event, type, version, event_id, recorded_at_ns)
        held = self._records
        held.append(entry)
        if seq > self._full_after:
            self._drop(seq - self._full_after)
        return entry

    def _index(self) -> dict[int, int]:
        """`_seqs`, brought to cover every held record.

        Entries, and records appended by `append_new`, are indexed here, when
        an append that must look ids up comes, not when appended: their ids
        are ones the bus just made, which no record held can share, and
        indexing each at once costs a one-handler publish-to-handled 873
        instructions on CPython 3.11 (13 387 against 12 514) and 995 on 3.13
        (15 180 against 14 185), for a lookup that a bus publishing only its
        own events never makes.
        """
        seqs = self._seqs
        records = self._records
        for index in range(max(self._unindexed, self._start), len(records)):
            item = records[index]
            seqs[id_of(item)] = seq_of(item)
        self._unindexed = len(records)
        return seqs

    async def read(
        self,
        from_seq: int = 1,
        *,
        to_seq: int | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> Sequence[Record]:
        check_read_arguments(from_seq, limit)
        if from_seq < self._first_seq and (to_seq is None or to_seq >= from_seq):
            raise history_truncated(repr(self), from_seq, self._first_seq)
        records = self._records
        start = bisect_left(records, from_seq, lo=self._start, key=seq_of)
        stop = len(records) if to_seq is None else bisect_left(records, to_seq + 1, lo=start, key=seq_of)
        if types is None:
            stop = min(stop, start + limit)
            return [self._record_at(index) for index in range(start, stop)]
        found: list[Record] = []
        for index in range(start, stop):
            if type_of(records[index]) in types:
                found.append(self._record_at(index))
                if len(found) == limit:
                    break
        return found

    def _record_at(self, index: int) -> Record:
        """The record held at ``index``: an entry read for the first time
        becomes its `Record`, which later reads return."""
        held = self._records[index]
        if not is_entry(held):
            return held
        record = self._records[index] = record_of(held)
        return record

    async def head(self) -> int:
        return self._last_seq

    async def compact(self, *, keep: int | None = None, keep_age: timedelta | None = None) -> CompactResult:
        """Remove old records now (see `Store.compact`).

        A memory store has no policy of its own besides ``max_records``, which
        every append enforces, so without ``keep`` or ``keep_age`` this removes
        nothing.
        """
        step = CompactionStep(Retention(keep=keep, keep_age=keep_age), time.time_ns(), needed_hold(self._needed))
        records, start = self._records, self._start
        first_young: int | None = None
        threshold = step.young_threshold_ns
        if threshold is not None:
            index = start
            while index < len(records) and recorded_at_ns_of(records[index]) < threshold:
                index += 1
            first_young = seq_of(records[index]) if index < len(records) else None
        bound, held_by, _ = step.decide(self._first_seq, self._last_seq, first_young, self._holds())
        removed = bisect_left(records, bound, lo=start, key=seq_of) - start
        self._drop(removed)
        self._first_seq = bound
        return CompactResult(removed=removed, first_seq=bound, held_by=held_by)

    def hold_history(self, needed: HistoryNeed | None) -> None:
        """Register what the running bus still needs (see `Store.hold_history`).

        Only `compact` heeds it: ``max_records`` is a hard bound.
        """
        self._needed = needed

    async def wait_for_append(self, after_seq: int) -> None:
        """Never called: a memory store is not shared between processes."""
        raise NotImplementedError("MemoryStore is not shared between processes")

    async def load_checkpoint(self, name: str) -> int | None:
        return self._checkpoints.get(name)

    async def save_checkpoints(self, positions: Mapping[str, int], *, fence: LeaseFence | None = None) -> None:
        """Save named positions; a ``fence`` no longer the lease's raises `LeaseLost` (see `Store.save_checkpoints`)."""
        if fence is not None:
            current = self._leases.get(fence.name)
            if current is None or current[2] != fence.token:
                raise lease_lost(fence, repr(self))
        self._checkpoints.update(positions)

    async def checkpoints(self) -> Mapping[str, int]:
        return dict(self._checkpoints)

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew a lease (see `Store.acquire_lease`), on this process's monotonic clock."""
        check_lease_ttl(ttl)
        now = time.monotonic()
        current = self._leases.get(name)
        if current is None:
            token = 1
        elif current[0] == holder:
            token = current[2]
        elif current[1] > now:
            return None
        else:
            token = current[2] + 1
        self._leases[name] = (holder, now + ttl, token)
        return token

    async def release_lease(self, name: str, holder: str) -> None:
        """Let ``holder``'s lease on ``name`` expire now, keeping its fencing token."""
        current = self._leases.get(name)
        if current is not None and current[0] == holder:
            self._leases[name] = (holder, -math.inf, current[2])

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

    def _holds(self) -> list[Hold]:
        holds = [Hold.checkpoint(name, position) for name, position in self._checkpoints.items()]
        holds.extend(Hold.dead_letter(letter.subscription, letter.record.seq) for letter in self._dead_letters.values())
        return holds

    def _drop(self, count: int) -> None:
        """Drop the ``count`` oldest records held; ``first_seq`` follows the last one dropped."""
        if count <= 0:
            return
        records = self._records
        seqs = self._seqs
        for index in range(self._start, min(self._start + count, self._unindexed)):
            del seqs[id_of(records[index])]
        self._start += count
        self._unindexed = max(self._unindexed, self._start)
        self._first_seq = max(self._first_seq, seq_of(records[self._start - 1]) + 1)
        if self._start >= max(_MIN_SLACK, (len(records) - self._start) // _SLACK_DIVISOR):
            del records[: self._start]
            self._unindexed -= self._start
            self._start = 0
        self._full_after = _full_after(self._last_seq, len(records) - self._start, self._max_records)

    def delete_newest(self, count: int) -> None:
        """Drop the ``count`` newest records (their seqs are not reused).

        For tests of what a store does after rows were deleted.
        """
        count = min(count, len(self._records) - self._start)
        if count > 0:
            records = self._records
            for index in range(len(records) - count, self._unindexed):
                del self._seqs[id_of(records[index])]
            del records[-count:]
            self._unindexed = min(self._unindexed, len(records))
            self._full_after = _full_after(self._last_seq, len(records) - self._start, self._max_records)


def _full_after(last_seq: int, held: int, max_records: int | None) -> int:
    """The seq past which an append must drop, with ``held`` records held up
    to ``last_seq``: each append adds one record and one seq, so the seq it
    just took, a compare per append whether or not the store is bounded,
    tells when the bound is crossed. Comparing the list's length instead
    (past 256, ``len()`` makes a new int at every append) costs a one-handler
    publish-to-handled 264 instructions on CPython 3.11 (12 574 against
    12 310) and 324 on 3.13 (14 287 against 13 963)."""
    return sys.maxsize if max_records is None else last_seq + max_records - held
