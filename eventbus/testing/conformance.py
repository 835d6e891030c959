"""The store conformance suite: one set of tests every `Store` must pass.

Shaped like Watermill's ``pubsub/tests/test_pubsub.go``: the tests live here
once, each store runs them in its own test module by subclassing
`StoreConformance` and providing a ``store`` fixture plus a few hooks. A
store with more `StoreFeatures` also subclasses the matching mixins,
`PersistentStoreConformance`, `SharedStoreConformance`,
`BoundedStoreConformance`, `RetentionStoreConformance`,
`ImmediateAppendConformance` and `TransactionsConformance` (with
`OutboxConformance`); the base suite
fails when a store declares a feature whose tests its module left out, so no
guarantee goes untested and no test is skipped.

```python
import pytest
from eventbus.testing.conformance import PersistentStoreConformance, StoreConformance


class TestMyStore(PersistentStoreConformance, StoreConformance):
    @pytest.fixture
    async def store(self, tmp_path):
        store = MyStore(tmp_path / "events")
        await store.open()
        yield store
        await store.close()

    async def reopen(self, store):
        await store.close()
        reopened = MyStore(store.path)
        await reopened.open()
        return reopened

    async def delete_newest(self, store, count):
        ...  # delete the newest rows behind the store's back
```

The suite needs pytest and anyio's pytest plugin (both in eventbus's
``test`` extra); every test is async and runs on each ``anyio_backend`` the
project parametrizes, asyncio and trio in eventbus's own ``conftest.py``.

What the suite holds a store to, beyond the `Store` docstrings:

- ``close()`` on a closed store does nothing (the suite closes a store that
  `StoreConformance.reopen` already closed).
- A batch is all or nothing. For a persistent store, a record whose event
  cannot be encoded as JSON is unstorable: ``append`` raises `StoreError` and
  stores no record of that batch. (A store that keeps the objects themselves,
  like `MemoryStore`, has nothing it cannot hold.)
- Event ids are unique: an append of a record whose event id is stored
  already (given as a `UUID` or its int form, by this instance, a peer or
  an earlier run), or repeated within the batch, stores nothing for it,
  gives it the stored seq and names its position in what ``append``
  returns; concurrent appends of one id store it once.
- A store keeps whatever JSON a record carries without validating it, so a
  record whose payload no longer validates (or whose type is unknown) is
  stored, read back, and fails only when its ``event`` is read.
- History goes only as a prefix, atomically: a reader paging through the
  store while it compacts sees contiguous pages or `HistoryTruncated`,
  never a gap. ``compact(keep=...)`` counts seqs, and never removes a record
  at or above a durable checkpoint, one a dead letter refers to, or one the
  registered `HistoryNeed` still needs.
- A lease on a name has at most one unexpired holder, across every instance
  sharing the store: acquiring succeeds for a free, expired or own lease and
  fails, changing nothing, for another holder's unexpired one.
- Leases are fenced: acquiring returns a token that grows each time the lease
  changes hands (after expiry or release) and stays the same across
  renewals; a checkpoint save fenced with a token that is no longer the
  lease's raises `LeaseLost` and saves none of its positions, one fenced with
  the current token saves them all.
- A store that declares ``immediate_append`` appends through `ImmediateAppend`
  exactly as through ``append``: the same seqs, the same records read back,
  the same bound and ``first_seq``.
- A store that declares ``transactions`` runs projections: a delivery's
  writes, its checkpoint and what it publishes commit together; a failed
  attempt rolls back before the retry; a dead letter commits with the
  checkpoint past it; `rebuild_projection` resets the checkpoint with the
  application's reset, and refuses while a bus holds the projection's lease.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any
from uuid import UUID, uuid4

import anyio
import anyio.lowlevel
import pytest
from pydantic import Field

from ..bus import EventBus
from ..deadletters import DeadLetter
from ..event import Event
from ..exceptions import (
    EventDecodeError,
    HistoryTruncated,
    LeaseLost,
    StoreError,
    TransactionError,
    UnknownEventType,
)
from ..policies import Retry
from ..projection import rebuild_projection
from ..record import NO_HEADERS, Record
from ..store import (
    DEFAULT_PAGE_SIZE,
    ImmediateAppend,
    LeaseFence,
    Retention,
    Store,
    immediate_append,
    transactions,
)
from ..store.codec import storable_text
from ..transaction import Transaction

__all__ = [
    "BoundedStoreConformance",
    "ImmediateAppendConformance",
    "OutboxConformance",
    "PersistentStoreConformance",
    "RetentionStoreConformance",
    "SharedStoreConformance",
    "StoreConformance",
    "TransactionsConformance",
    "new_record",
]

_ONE_MICROSECOND = timedelta(microseconds=1)
_FIXED_TIME = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)
_FIXED_TIME_NS = 1_700_000_000_123_456_789
_CONCURRENT_WRITERS = 6
_BATCHES_PER_WRITER = 8
_CANCELLATION_POINTS = 6
_AN_HOUR = timedelta(hours=1)
_COMPACTION_ROUNDS = 30


class _Sample(Event, name="eventbus.conformance.Sample", version=3):
    """An event with a field of every common JSON shape (and a version above 1)."""

    text: str
    number: int = 0
    ratio: float = 0.0
    flag: bool = False
    tags: tuple[str, ...] = ()
    nested: dict[str, list[int]] = Field(default_factory=dict)
    at: datetime | None = None
    note: str | None = None


class _Other(Event, name="eventbus.conformance.Other"):
    """A second, small event type, for reads filtered by type."""

    index: int


class _Batched(Event, name="eventbus.conformance.Batched"):
    """Says which writer's batch an event belongs to, for the concurrency tests."""

    writer: int
    batch: int
    position: int
    size: int


class _Opaque(Event, name="eventbus.conformance.Opaque"):
    """Holds any value, including one that JSON cannot encode."""

    value: Any


_UNKNOWN_TYPE = "eventbus.conformance.NeverRegistered"


def new_record(
    event: Event,
    *,
    event_id: UUID | int | None = None,
    recorded_at: datetime | int | None = None,
    correlation_id: UUID | None = None,
    causation_id: UUID | None = None,
    headers: Mapping[str, str] | None = None,
) -> Record:
    """A record as the bus hands it to `Store.append`: seq 0, a fresh id, now.

    ``event_id`` may be a `UUID` or its int form (the bus uses ints) and
    ``recorded_at`` an aware datetime or integer nanoseconds, so a store is
    exercised with every form `Record` accepts.
    """
    cls = type(event)
    return Record(
        0,
        event,
        cls.__event_type__,
        cls.__event_version__,
        uuid4() if event_id is None else event_id,
        time.time_ns() if recorded_at is None else recorded_at,
        correlation_id,
        causation_id,
        MappingProxyType(dict(headers)) if headers else NO_HEADERS,
    )


def _stored_payload(type_name: str, version: int, data: bytes | str) -> Record:
    """A record carrying raw JSON, as if an older program had stored it."""
    return Record.from_stored(
        seq=0, type=type_name, version=version, data=data, event_id=uuid4(), recorded_at=time.time_ns()
    )


def _others(count: int, start: int = 0) -> list[Record]:
    return [new_record(_Other(index=index)) for index in range(start, start + count)]


def _seqs(records: Iterable[Record]) -> list[int]:
    return [record.seq for record in records]


def _ids(records: Iterable[Record]) -> list[UUID]:
    return [record.event_id for record in records]


def _is_contiguous(seqs: Sequence[int]) -> bool:
    return list(seqs) == list(range(seqs[0], seqs[0] + len(seqs)))


async def _read_all(store: Store, from_seq: int = 1, *, page: int = DEFAULT_PAGE_SIZE) -> list[Record]:
    """Every record from ``from_seq`` on, paging the way catch-up does."""
    records: list[Record] = []
    while True:
        batch = await store.read(from_seq, limit=page)
        records.extend(batch)
        if len(batch) < page:
            return records
        from_seq = batch[-1].seq + 1


def _records_with_every_field() -> list[Record]:
    """A record with every field set and unusual text, one with the fewest fields, and a large one."""
    rich = new_record(
        _Sample(
            text='naïve café ✓ "quoted" \\ \n newline \x00 nul',
            number=-(2**53),
            ratio=3.141592653589793,
            flag=True,
            tags=("a", "β", ""),
            nested={"primes": [2, 3, 5, 7], "none": []},
            at=_FIXED_TIME,
            note=None,
        ),
        recorded_at=_FIXED_TIME,
        correlation_id=uuid4(),
        causation_id=uuid4(),
        headers={"origin": "billing", "trace-id": "0af7651916cd43dd8448eb211c80319c", "ünï": "çødé"},
    )
    compact = new_record(_Other(index=7), event_id=uuid4().int, recorded_at=_FIXED_TIME_NS)
    large = new_record(_Sample(text="x" * 200_000, tags=tuple(str(n) for n in range(2_000))))
    return [rich, compact, large]


def _assert_every_field_stored(stored: Sequence[Record], records: Sequence[Record]) -> None:
    """``stored`` (read back) holds ``records`` (`_records_with_every_field`) field for field."""
    assert len(stored) == len(records)
    for actual, expected in zip(stored, records, strict=True):
        _assert_same_record(actual, expected)
    assert stored[0].causation_id == records[0].causation_id is not None
    assert stored[1].correlation_id == stored[1].event_id
    assert stored[1].causation_id is None
    assert dict(stored[1].headers) == {}
    assert stored[0].version == 3


def _assert_same_record(actual: Record, expected: Record, *, decodes: bool = True) -> None:
    """Every field of ``actual`` equals ``expected``'s (``recorded_at`` to the microsecond)."""
    assert actual.seq == expected.seq
    assert actual.type == expected.type
    assert actual.version == expected.version
    assert actual.event_id == expected.event_id
    assert isinstance(actual.event_id, UUID)
    assert actual.correlation_id == expected.correlation_id
    assert actual.causation_id == expected.causation_id
    assert dict(actual.headers) == dict(expected.headers)
    assert actual.recorded_at.utcoffset() == timedelta(0), "recorded_at must be an aware UTC datetime"
    assert abs(actual.recorded_at - expected.recorded_at) <= _ONE_MICROSECOND
    if decodes:
        assert actual.event == expected.event


def _assert_same_letter(actual: DeadLetter, expected: DeadLetter) -> None:
    assert actual.id == expected.id
    assert actual.subscription == expected.subscription
    assert actual.error_type == expected.error_type
    assert actual.error_message == expected.error_message
    assert actual.traceback == expected.traceback
    assert actual.attempts == expected.attempts
    assert actual.first_failed_at == expected.first_failed_at
    assert actual.last_failed_at == expected.last_failed_at
    assert actual.last_failed_at.utcoffset() == timedelta(0)
    _assert_same_record(actual.record, expected.record, decodes=False)
    assert actual.record.data is not None


def _assert_whole_batches(records: Sequence[Record], *, gapless: bool) -> None:
    """``records`` (a read of the whole store) shows every `_Batched` batch whole, in one contiguous run."""
    batches: dict[tuple[int, int], list[Record]] = defaultdict(list)
    for record in records:
        event = record.event
        assert isinstance(event, _Batched)
        batches[event.writer, event.batch].append(record)
    for key, members in batches.items():
        events = [record.event for record in members]
        assert isinstance(events[0], _Batched)
        assert len(members) == events[0].size, f"batch {key} is partly visible: {_seqs(members)}"
        assert _is_contiguous(_seqs(members)), f"batch {key} is not contiguous: {_seqs(members)}"
    if gapless and records:
        assert _seqs(records) == list(range(1, len(records) + 1))


def _letter(subscription: str, record: Record, number: int) -> DeadLetter:
    first = _FIXED_TIME - timedelta(seconds=number, microseconds=number)
    return DeadLetter(
        id=uuid4(),
        subscription=subscription,
        record=record,
        error_type="builtins.ValueError",
        error_message=f"amount must be positive ✗ (letter {number})",
        traceback=(
            "Traceback (most recent call last):\n"
            f'  File "handlers.py", line {number}, in audit\n'
            "ValueError: amount must be positive ✗\n"
        ),
        attempts=number + 1,
        first_failed_at=first,
        last_failed_at=first + timedelta(milliseconds=250, microseconds=1),
    )


class StoreConformance:
    """The tests every `Store` implementation must pass; subclass it in a test module.

    The subclass provides an async ``store`` fixture yielding an opened,
    empty store (and closing it afterwards) and `delete_newest`. A persistent
    store's module also subclasses `PersistentStoreConformance`, one shared
    between processes `SharedStoreConformance`, and so on for each feature
    the store declares (see the module's docstring).
    """

    async def delete_newest(self, store: Store, count: int) -> None:
        """Delete the ``count`` newest records behind the store's back (e.g. SQL ``DELETE``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement delete_newest()")

    async def test_every_declared_feature_is_tested(self, store: Store) -> None:
        declared = {
            "persistent": (store.features.persistent, PersistentStoreConformance),
            "shared_between_processes": (store.features.shared_between_processes, SharedStoreConformance),
            "bounded": (store.features.bounded, BoundedStoreConformance),
            "retention": (store.features.retention, RetentionStoreConformance),
            "immediate_append": (store.features.immediate_append, ImmediateAppendConformance),
            "transactions": (store.features.transactions, TransactionsConformance),
        }
        for feature, (has_it, suite) in declared.items():
            assert has_it == isinstance(self, suite), (
                f"{type(store).__name__}.features.{feature} is {has_it}, "
                f"so {type(self).__name__} must {'' if has_it else 'not '}subclass {suite.__name__}"
            )

    # -- an empty store -------------------------------------------------------

    async def test_new_store_is_empty(self, store: Store) -> None:
        assert await store.head() == 0
        assert list(await store.read()) == []
        assert list(await store.dead_letters()) == []
        assert await store.load_checkpoint("anything") is None
        assert dict(await store.checkpoints()) == {}

    async def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)

    async def test_close_twice_is_harmless(self, store: Store) -> None:
        await store.close()
        await store.close()

    # -- append ---------------------------------------------------------------

    async def test_append_sets_increasing_contiguous_seqs(self, store: Store) -> None:
        batches = [_others(1), _others(3, start=1), _others(5, start=4)]
        last = 0
        for batch in batches:
            await store.append(batch)
            seqs = _seqs(batch)
            assert seqs[0] > last
            assert _is_contiguous(seqs)
            last = seqs[-1]
            assert await store.head() == last

    async def test_append_numbers_from_one_without_gaps_when_gapless(self, store: Store) -> None:
        first, second, third = _others(1), _others(3, start=1), _others(5, start=4)
        for batch in (first, second, third):
            await store.append(batch)
        seqs = _seqs(first + second + third)
        assert _seqs(await store.read()) == seqs
        if store.features.gapless:
            assert seqs == list(range(1, 10))
        else:
            assert seqs == sorted(set(seqs))
            assert seqs[0] >= 1

    async def test_append_of_nothing_changes_nothing(self, store: Store) -> None:
        await store.append(_others(2))
        head = await store.head()
        await store.append([])
        assert await store.head() == head
        assert len(await store.read()) == 2

    async def test_a_cancelled_append_is_all_or_nothing(self, store: Store) -> None:
        expected: list[UUID] = []
        for checkpoints in range(_CANCELLATION_POINTS):
            batch = _others(50, start=checkpoints * 50)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:
                    group.start_soon(store.append, batch)
                    for _ in range(checkpoints):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()
            stored = _ids(await _read_all(store))
            assert stored[: len(expected)] == expected
            added = stored[len(expected) :]
            assert added in ([], _ids(batch)), f"a batch cancelled after {checkpoints} checkpoints was torn"
            expected = stored
        last = _others(1, start=1_000)
        await store.append(last)
        records = await _read_all(store)
        assert _ids(records) == [*expected, *_ids(last)]
        if store.features.gapless:
            assert _seqs(records) == list(range(1, len(records) + 1))

    async def test_concurrent_appends_get_distinct_contiguous_seqs(self, store: Store) -> None:
        appended: list[Record] = []
        writers_done = anyio.Event()
        gapless = store.features.gapless

        async def write(writer: int) -> None:
            for batch in range(_BATCHES_PER_WRITER):
                size = 1 + (writer * 7 + batch * 3) % 9
                records = [
                    new_record(_Batched(writer=writer, batch=batch, position=position, size=size))
                    for position in range(size)
                ]
                await store.append(records)
                assert _is_contiguous(_seqs(records))
                appended.extend(records)

        async def read_while_writing() -> None:
            while not writers_done.is_set():
                _assert_whole_batches(await _read_all(store, page=16), gapless=gapless)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as outer:
            outer.start_soon(read_while_writing)
            async with anyio.create_task_group() as writers:
                for writer in range(_CONCURRENT_WRITERS):
                    writers.start_soon(write, writer)
            writers_done.set()

        records = await _read_all(store)
        _assert_whole_batches(records, gapless=gapless)
        assert sorted(_seqs(appended)) == _seqs(records)
        by_seq = {record.seq: record.event_id for record in appended}
        assert [by_seq[record.seq] for record in records] == _ids(records)

    async def test_deleted_newest_seqs_are_never_reused(self, store: Store) -> None:
        await store.append(_others(5))
        head = await store.head()
        await self.delete_newest(store, 2)
        assert await store.head() == head
        later = _others(2, start=5)
        await store.append(later)
        assert min(_seqs(later)) > head
        remaining = _seqs(await store.read())
        assert remaining[-2:] == _seqs(later)
        assert len(remaining) == 5

    # -- event ids are unique ---------------------------------------------------

    async def test_an_event_id_stored_already_keeps_its_seq(self, store: Store) -> None:
        first = _others(3)
        assert list(await store.append(first)) == []
        head = await store.head()
        again = [new_record(_Other(index=9), event_id=first[1].event_id)]
        assert list(await store.append(again)) == [0]
        assert again[0].seq == first[1].seq
        assert await store.head() == head
        assert _ids(await store.read()) == _ids(first)

    async def test_an_event_id_is_one_id_as_a_uuid_and_as_an_int(self, store: Store) -> None:
        as_int, as_uuid = uuid4(), uuid4()
        await store.append(
            [new_record(_Other(index=0), event_id=as_int.int), new_record(_Other(index=1), event_id=as_uuid)]
        )
        again = [new_record(_Other(index=2), event_id=as_int), new_record(_Other(index=3), event_id=as_uuid.int)]
        assert sorted(await store.append(again)) == [0, 1]
        assert len(await store.read()) == 2

    async def test_a_batch_of_stored_new_and_repeated_ids(self, store: Store) -> None:
        stored = _others(2)
        await store.append(stored)
        head = await store.head()
        batch = [
            new_record(_Other(index=10)),
            new_record(_Other(index=11), event_id=stored[0].event_id),
            new_record(_Other(index=12)),
        ]
        batch.append(new_record(_Other(index=13), event_id=batch[0].event_id))
        assert sorted(await store.append(batch)) == [1, 3]
        assert batch[1].seq == stored[0].seq
        assert batch[3].seq == batch[0].seq
        assert batch[0].seq > head
        assert batch[2].seq == batch[0].seq + 1
        assert await store.head() == batch[2].seq
        records = await store.read()
        assert _ids(records) == [*_ids(stored), batch[0].event_id, batch[2].event_id]
        assert [record.event.index for record in records[2:]] == [10, 12]  # type: ignore[attr-defined]

    async def test_concurrent_appends_of_one_id_store_it_once(self, store: Store) -> None:
        event_id = uuid4()
        answers: list[tuple[int, list[int]]] = []

        async def append(writer: int) -> None:
            record = new_record(_Other(index=writer), event_id=event_id)
            already = await store.append([record, *_others(1, start=100 + writer)])
            answers.append((record.seq, sorted(already)))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for writer in range(_CONCURRENT_WRITERS):
                    group.start_soon(append, writer)
        assert len({seq for seq, _ in answers}) == 1
        assert sorted(already for _, already in answers) == [[]] + [[0]] * (_CONCURRENT_WRITERS - 1)
        records = await _read_all(store)
        assert _ids(records).count(event_id) == 1
        assert len(records) == 1 + _CONCURRENT_WRITERS

    # -- read -----------------------------------------------------------------

    async def test_read_a_range(self, store: Store) -> None:
        records = _others(10)
        await store.append(records)
        seqs = _seqs(records)
        assert _seqs(await store.read(seqs[2], to_seq=seqs[5])) == seqs[2:6]
        assert _seqs(await store.read(to_seq=seqs[3])) == seqs[:4]
        assert _seqs(await store.read(seqs[6])) == seqs[6:]
        assert _seqs(await store.read(seqs[4], to_seq=seqs[4])) == [seqs[4]]
        assert list(await store.read(seqs[5], to_seq=seqs[4])) == []
        assert _ids(await store.read()) == _ids(records)

    async def test_read_with_a_limit(self, store: Store) -> None:
        records = _others(10)
        await store.append(records)
        seqs = _seqs(records)
        assert _seqs(await store.read(limit=3)) == seqs[:3]
        assert _seqs(await store.read(seqs[3], limit=3)) == seqs[3:6]
        assert _seqs(await store.read(seqs[8], limit=5)) == seqs[8:]
        assert _seqs(await store.read(seqs[1], to_seq=seqs[3], limit=5)) == seqs[1:4]
        assert _seqs(await _read_all(store, page=3)) == seqs

    async def test_read_returns_a_page_by_default(self, store: Store) -> None:
        records = _others(DEFAULT_PAGE_SIZE + 5)
        await store.append(records)
        assert _ids(await store.read()) == _ids(records[:DEFAULT_PAGE_SIZE])

    async def test_read_by_type(self, store: Store) -> None:
        records = [
            new_record(_Other(index=index)) if index % 3 else new_record(_Sample(text=str(index)))
            for index in range(12)
        ]
        await store.append(records)
        others = [record for record in records if record.type == _Other.__event_type__]
        samples = [record for record in records if record.type == _Sample.__event_type__]
        assert _ids(await store.read(types={_Other.__event_type__})) == _ids(others)
        assert _ids(await store.read(types=[_Sample.__event_type__])) == _ids(samples)
        both = frozenset({_Other.__event_type__, _Sample.__event_type__})
        assert _ids(await store.read(types=both)) == _ids(records)
        assert list(await store.read(types={_UNKNOWN_TYPE})) == []
        assert list(await store.read(types=())) == []

    async def test_read_by_type_limits_matching_records(self, store: Store) -> None:
        records = [
            new_record(_Other(index=index)) if index % 2 else new_record(_Sample(text=str(index)))
            for index in range(20)
        ]
        await store.append(records)
        samples = [record for record in records if record.type == _Sample.__event_type__]
        page = await store.read(samples[2].seq, to_seq=samples[8].seq, types={_Sample.__event_type__}, limit=4)
        assert _ids(page) == _ids(samples[2:6])
        assert _ids(await store.read(samples[6].seq, types={_Sample.__event_type__})) == _ids(samples[6:])

    async def test_read_past_the_head_is_empty(self, store: Store) -> None:
        assert list(await store.read(1)) == []
        await store.append(_others(3))
        head = await store.head()
        assert list(await store.read(head + 1)) == []
        assert list(await store.read(head + 1_000_000)) == []

    @pytest.mark.parametrize("from_seq", [0, -1])
    async def test_read_rejects_from_seq_below_one(self, store: Store, from_seq: int) -> None:
        with pytest.raises(ValueError, match="from_seq"):
            await store.read(from_seq)

    @pytest.mark.parametrize("limit", [0, -5])
    async def test_read_rejects_limit_below_one(self, store: Store, limit: int) -> None:
        with pytest.raises(ValueError, match="limit"):
            await store.read(1, limit=limit)

    # -- what a record carries ------------------------------------------------

    async def test_every_record_field_round_trips(self, store: Store) -> None:
        records = _records_with_every_field()
        await store.append(records)
        _assert_every_field_stored(await store.read(), records)

    async def test_every_record_field_round_trips_appended_one_at_a_time(self, store: Store) -> None:
        # a store may append a single record in a statement of its own (PostgreSQL does)
        records = _records_with_every_field()
        for record in records:
            await store.append([record])
        _assert_every_field_stored(await store.read(), records)

    async def test_the_causation_depth_round_trips(self, store: Store) -> None:
        records = _others(3)
        for depth, record in zip((0, 1, 63), records, strict=True):
            record.depth = depth
        await store.append(records)
        stored = await store.read()
        assert [record.depth for record in stored] == [0, 1, 63]
        await store.add_dead_letters([_letter("billing", stored[2], 1)])
        (letter,) = await store.dead_letters()
        assert letter.record.depth == 63

    async def test_an_invalid_payload_fails_only_when_its_event_is_read(self, store: Store) -> None:
        name, version = _Sample.__event_type__, _Sample.__event_version__
        invalid = _stored_payload(name, version, b'{"unexpected": 1}')
        invalid_text = _stored_payload(name, version, '{"text": ["not", "a", "string"]}')
        too_new = _stored_payload(name, version + 1, b'{"text": "from the future"}')
        neighbours = _others(2)
        await store.append([neighbours[0], invalid, invalid_text, too_new, neighbours[1]])
        stored = await store.read()
        assert len(stored) == 5
        assert stored[0].event == neighbours[0].event
        assert stored[4].event == neighbours[1].event
        for record, original in zip(stored[1:4], (invalid, invalid_text, too_new), strict=True):
            _assert_same_record(record, original, decodes=False)
            with pytest.raises(EventDecodeError) as caught:
                _ = record.event
            assert caught.value.seq == record.seq
            assert caught.value.type == name

    async def test_an_unknown_type_fails_only_when_its_event_is_read(self, store: Store) -> None:
        unknown = _stored_payload(_UNKNOWN_TYPE, 1, b'{"anything": true}')
        await store.append([unknown, *_others(1)])
        stored = await store.read()
        assert stored[0].type == _UNKNOWN_TYPE
        _assert_same_record(stored[0], unknown, decodes=False)
        with pytest.raises(UnknownEventType, match=_UNKNOWN_TYPE):
            _ = stored[0].event
        assert isinstance(stored[1].event, _Other)

    # -- checkpoints ----------------------------------------------------------

    async def test_checkpoints(self, store: Store) -> None:
        assert await store.load_checkpoint("billing") is None
        await store.save_checkpoints({"billing": 10, "shipping": 3, "audit ✓": 2**62})
        assert await store.load_checkpoint("billing") == 10
        assert await store.load_checkpoint("shipping") == 3
        assert await store.load_checkpoint("audit ✓") == 2**62
        await store.save_checkpoints({"billing": 42})
        await store.save_checkpoints({})
        assert await store.load_checkpoint("billing") == 42
        assert await store.load_checkpoint("shipping") == 3
        assert await store.load_checkpoint("missing") is None
        assert dict(await store.checkpoints()) == {"billing": 42, "shipping": 3, "audit ✓": 2**62}

    # -- leases ---------------------------------------------------------------

    async def test_a_free_lease_is_acquired_and_renewed_by_its_holder(self, store: Store) -> None:
        assert await store.acquire_lease("billing", "a", 30)
        assert await store.acquire_lease("billing", "a", 30)

    async def test_a_held_lease_is_refused_to_another_holder(self, store: Store) -> None:
        assert await store.acquire_lease("billing", "a", 30)
        assert not await store.acquire_lease("billing", "b", 30)
        assert await store.acquire_lease("billing", "a", 30), "a refused acquisition must change nothing"
        assert await store.acquire_lease("shipping", "b", 30), "leases are per name"

    async def test_a_released_lease_is_free_at_once(self, store: Store) -> None:
        assert await store.acquire_lease("billing", "a", 30)
        await store.release_lease("billing", "b")
        assert not await store.acquire_lease("billing", "b", 30), "only the holder releases"
        await store.release_lease("billing", "a")
        await store.release_lease("billing", "a")
        assert await store.acquire_lease("billing", "b", 30)

    async def test_an_expired_lease_goes_to_the_next_holder(self, store: Store) -> None:
        ttl = 0.3
        assert await store.acquire_lease("billing", "a", ttl)
        assert not await store.acquire_lease("billing", "b", 30)
        await anyio.sleep(ttl)  # the behaviour under test: the lease runs out with time
        assert await store.acquire_lease("billing", "b", 30)
        assert not await store.acquire_lease("billing", "a", ttl), "the old holder cannot renew a lease it lost"

    async def test_concurrent_holders_get_one_lease(self, store: Store) -> None:
        won: list[str] = []

        async def ask(holder: str) -> None:
            if await store.acquire_lease("billing", holder, 30):
                won.append(holder)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for n in range(_CONCURRENT_WRITERS):
                    group.start_soon(ask, f"holder-{n}")
        assert len(won) == 1

    @pytest.mark.parametrize("ttl", [0, -1.0, math.nan, math.inf, True, "10"])
    async def test_acquire_lease_refuses_a_bad_ttl(self, store: Store, ttl: Any) -> None:
        with pytest.raises(ValueError, match="ttl"):
            await store.acquire_lease("billing", "a", ttl)
        assert await store.acquire_lease("billing", "b", 30), "a refused ttl takes no lease"

    # -- fenced leases --------------------------------------------------------

    async def test_a_lease_token_grows_each_time_the_lease_changes_hands(self, store: Store) -> None:
        ttl = 0.3
        first = await store.acquire_lease("billing", "a", ttl)
        assert type(first) is int
        assert first > 0
        await anyio.sleep(ttl)  # the behaviour under test: the lease runs out with time
        taken = await store.acquire_lease("billing", "b", 30)
        assert taken is not None
        assert taken > first, "a takeover after expiry gets a greater token"
        await store.release_lease("billing", "b")
        back = await store.acquire_lease("billing", "a", 30)
        assert back is not None
        assert back > taken, "a takeover after a release gets a greater token"
        assert await store.acquire_lease("shipping", "a", 30) is not None, "tokens are per lease"

    async def test_renewals_keep_the_lease_token(self, store: Store) -> None:
        token = await store.acquire_lease("billing", "a", 30)
        assert token is not None
        assert await store.acquire_lease("billing", "a", 30) == token
        assert await store.acquire_lease("billing", "b", 30) is None
        assert await store.acquire_lease("billing", "a", 30) == token, "a refused takeover changes nothing"
        await store.release_lease("billing", "a")
        assert await store.acquire_lease("billing", "a", 30) == token, "nobody held it in between"

    async def test_a_save_fenced_with_the_current_token_is_saved(self, store: Store) -> None:
        token = await store.acquire_lease("billing", "a", 30)
        assert token is not None
        await store.save_checkpoints({"billing": 7, "billing-audit": 3}, fence=LeaseFence("billing", token))
        assert await store.load_checkpoint("billing") == 7
        assert await store.load_checkpoint("billing-audit") == 3
        await store.release_lease("billing", "a")
        await store.save_checkpoints({"billing": 8}, fence=LeaseFence("billing", token))
        assert await store.load_checkpoint("billing") == 8, "released, but nobody has taken it since"

    async def test_a_save_fenced_with_a_stale_token_is_refused_and_changes_nothing(self, store: Store) -> None:
        stale = await store.acquire_lease("billing", "a", 30)
        assert stale is not None
        await store.save_checkpoints({"billing": 5}, fence=LeaseFence("billing", stale))
        await store.release_lease("billing", "a")
        current = await store.acquire_lease("billing", "b", 30)
        assert current is not None
        await store.save_checkpoints({"billing": 9}, fence=LeaseFence("billing", current))
        with pytest.raises(LeaseLost) as refused:
            await store.save_checkpoints({"billing": 6, "billing-audit": 6}, fence=LeaseFence("billing", stale))
        assert isinstance(refused.value, StoreError)
        assert (refused.value.name, refused.value.token) == ("billing", stale)
        assert "billing" in str(refused.value)
        assert await store.load_checkpoint("billing") == 9
        assert await store.load_checkpoint("billing-audit") is None, "a refused save saves none of its positions"
        assert await store.acquire_lease("billing", "b", 30) == current, "a refused save leaves the lease alone"

    async def test_a_save_fenced_by_a_lease_never_taken_is_refused(self, store: Store) -> None:
        with pytest.raises(LeaseLost):
            await store.save_checkpoints({"billing": 1}, fence=LeaseFence("billing", 1))
        assert await store.load_checkpoint("billing") is None
        await store.save_checkpoints({"billing": 2})
        assert await store.load_checkpoint("billing") == 2, "an unfenced save needs no lease"

    # -- dead letters ---------------------------------------------------------

    async def test_dead_letters_round_trip_in_insertion_order(self, store: Store) -> None:
        undecodable = _stored_payload(_Sample.__event_type__, _Sample.__event_version__, b'{"nope": 1}')
        headed = new_record(_Other(index=1), headers={"origin": "billing"}, causation_id=uuid4())
        await store.append([*_others(3), headed, undecodable])
        stored = await store.read()
        letters = [
            _letter("billing", stored[0], 1),
            _letter("shipping", stored[1], 2),
            _letter("billing", stored[3], 3),
            _letter("billing", stored[4], 4),
            _letter("shipping", stored[2], 5),
        ]
        await store.add_dead_letters(letters[:3])
        await store.add_dead_letters(letters[3:])
        await store.add_dead_letters([])

        everything = await store.dead_letters()
        assert [letter.id for letter in everything] == [letter.id for letter in letters]
        for actual, expected in zip(everything, letters, strict=True):
            _assert_same_letter(actual, expected)
        assert everything[0].record.event == stored[0].event
        assert everything[2].record.event == stored[3].event
        with pytest.raises(EventDecodeError):
            _ = everything[3].record.event

        billing = await store.dead_letters("billing")
        assert [letter.id for letter in billing] == [letters[0].id, letters[2].id, letters[3].id]
        shipping = await store.dead_letters(subscription="shipping")
        assert [letter.id for letter in shipping] == [letters[1].id, letters[4].id]
        assert list(await store.dead_letters("nobody")) == []

    async def test_deleting_dead_letters_counts_those_that_existed(self, store: Store) -> None:
        await store.append(_others(3))
        stored = await store.read()
        letters = [_letter("billing", record, number) for number, record in enumerate(stored)]
        await store.add_dead_letters(letters)
        assert await store.delete_dead_letters([]) == 0
        assert await store.delete_dead_letters([letters[1].id, letters[1].id, uuid4()]) == 1
        assert await store.delete_dead_letters([letters[1].id]) == 0
        assert [letter.id for letter in await store.dead_letters()] == [letters[0].id, letters[2].id]
        assert await store.delete_dead_letters({letters[0].id, letters[2].id}) == 2
        assert list(await store.dead_letters()) == []

    async def test_dead_letters_hold_any_text(self, store: Store) -> None:
        # os.fsdecode of a non-UTF-8 file name gives lone surrogates; C strings stop at NUL
        message = "cannot open '/data/caf\udce9.csv': \x00 no such file \ud800"
        traceback = 'Traceback (most recent call last):\n  File "/srv/\udcff.py", line 1\nOSError: \udce9\n'
        await store.append(_others(1))
        (record,) = await store.read()
        letter = replace(_letter("files", record, 1), error_message=message, traceback=traceback)
        await store.add_dead_letters([letter])
        (stored,) = await store.dead_letters()
        assert stored.id == letter.id
        for actual, original in ((stored.error_message, message), (stored.traceback, traceback)):
            assert actual in (original, storable_text(original)), "kept as is, or with what cannot be stored escaped"
        assert "caf" in stored.error_message
        assert "no such file" in stored.error_message
        assert await store.delete_dead_letters([letter.id]) == 1

    async def test_deleting_dead_letters_refuses_ids_that_are_not_uuids(self, store: Store) -> None:
        await store.append(_others(1))
        (record,) = await store.read()
        letter = _letter("billing", record, 1)
        await store.add_dead_letters([letter])
        not_uuids: list[Any] = [[str(letter.id)], [letter.id, letter.id.int], str(letter.id)]
        for ids in not_uuids:
            with pytest.raises(TypeError, match="UUID"):
                await store.delete_dead_letters(ids)
        assert [kept.id for kept in await store.dead_letters()] == [letter.id]

    # -- bounded history ------------------------------------------------------

    async def test_a_new_store_starts_at_seq_one(self, store: Store) -> None:
        assert store.first_seq == 1
        await store.append(_others(3))
        assert store.first_seq == 1
        assert len(await store.read(1)) == 3

    async def test_compact_keeps_the_newest_seqs(self, store: Store) -> None:
        records = _others(10)
        await store.append(records)
        seqs = _seqs(records)
        head = await store.head()
        result = await store.compact(keep=3)
        assert (result.removed, result.first_seq, result.held_by) == (7, seqs[7], None)
        assert store.first_seq == seqs[7]
        assert await store.head() == head
        assert _ids(await store.read(seqs[7])) == _ids(records[7:])
        assert _ids(await store.read(seqs[8], to_seq=seqs[8])) == _ids(records[8:9])
        later = _others(1, start=10)
        await store.append(later)
        if store.features.gapless:
            assert later[0].seq == head + 1
        assert _ids(await _read_all(store, seqs[7])) == _ids(records[7:] + later)

    async def test_reading_below_first_seq_raises_history_truncated(self, store: Store) -> None:
        records = [
            new_record(_Sample(text=str(index))) if index % 2 else new_record(_Other(index=index)) for index in range(8)
        ]
        await store.append(records)
        seqs = _seqs(records)
        await store.compact(keep=4)
        first = seqs[4]
        for from_seq, to_seq, types in [
            (1, None, None),
            (seqs[3], None, None),
            (seqs[0], seqs[1], None),
            (seqs[2], None, {_Sample.__event_type__}),
        ]:
            with pytest.raises(HistoryTruncated, match=f"seq {first}") as caught:
                await store.read(from_seq, to_seq=to_seq, types=types)
            assert (caught.value.first_seq, caught.value.requested) == (first, from_seq)
        assert list(await store.read(seqs[3], to_seq=seqs[2])) == []
        assert _ids(await store.read(first, types={_Sample.__event_type__})) == _ids(
            [record for record in records[4:] if record.type == _Sample.__event_type__]
        )

    async def test_compact_by_age(self, store: Store) -> None:
        old = [new_record(_Other(index=index), recorded_at=datetime.now(UTC) - 2 * _AN_HOUR) for index in range(4)]
        young = _others(3, start=4)
        await store.append(old)
        await store.append(young)
        result = await store.compact(keep_age=_AN_HOUR)
        assert (result.removed, result.first_seq) == (4, young[0].seq)
        assert _ids(await store.read(store.first_seq)) == _ids(young)

    async def test_with_a_count_and_an_age_each_is_a_limit(self, store: Store) -> None:
        old = [new_record(_Other(index=index), recorded_at=datetime.now(UTC) - 2 * _AN_HOUR) for index in range(4)]
        young = _others(4, start=4)
        await store.append(old + young)
        result = await store.compact(keep=6, keep_age=_AN_HOUR)
        assert (result.removed, result.first_seq) == (4, young[0].seq)
        result = await store.compact(keep=2, keep_age=_AN_HOUR)
        assert (result.removed, result.first_seq) == (2, young[2].seq)

    async def test_compact_without_a_policy_removes_nothing(self, store: Store) -> None:
        await store.append(_others(5))
        result = await store.compact()
        assert (result.removed, result.first_seq) == (0, 1)
        assert len(await store.read()) == 5

    async def test_compact_never_moves_first_seq_back(self, store: Store) -> None:
        records = _others(6)
        await store.append(records)
        await store.compact(keep=2)
        result = await store.compact(keep=100)
        assert (result.removed, result.first_seq) == (0, records[4].seq)
        assert store.first_seq == records[4].seq

    @pytest.mark.parametrize(
        "policy",
        [{"keep": -1}, {"keep": True}, {"keep": 1.5}, {"keep_age": timedelta(0)}, {"keep_age": 3600}],
        ids=["negative-keep", "bool-keep", "float-keep", "zero-age", "age-not-timedelta"],
    )
    async def test_compact_refuses_a_bad_policy(self, store: Store, policy: dict[str, Any]) -> None:
        await store.append(_others(3))
        with pytest.raises(ValueError, match="keep"):
            await store.compact(**policy)
        assert len(await store.read()) == 3

    async def test_compact_stops_at_the_lowest_durable_checkpoint(self, store: Store) -> None:
        records = _others(8)
        await store.append(records)
        seqs = _seqs(records)
        await store.save_checkpoints({"billing": seqs[3], "audit": seqs[6]})
        result = await store.compact(keep=0)
        assert (result.removed, result.first_seq) == (3, seqs[3])
        assert result.held_by is not None
        assert "billing" in result.held_by
        assert _ids(await store.read(seqs[3])) == _ids(records[3:])
        await store.save_checkpoints({"billing": seqs[7], "audit": seqs[7]})
        result = await store.compact(keep=0)
        assert (result.removed, result.first_seq) == (4, seqs[7])

    async def test_compact_keeps_what_a_dead_letter_refers_to(self, store: Store) -> None:
        records = _others(6)
        await store.append(records)
        stored = await store.read()
        letter = _letter("billing", stored[2], 1)
        await store.add_dead_letters([letter])
        result = await store.compact(keep=0)
        assert (result.removed, result.first_seq) == (2, stored[2].seq)
        assert result.held_by is not None
        assert "billing" in result.held_by
        (kept,) = await store.dead_letters()
        _assert_same_letter(kept, letter)
        assert kept.record.event == records[2].event
        assert _ids(await store.read(stored[2].seq, to_seq=stored[2].seq)) == [letter.record.event_id]
        await store.delete_dead_letters([letter.id])
        head = await store.head()
        result = await store.compact(keep=0)
        assert (result.removed, result.first_seq) == (4, head + 1)
        assert list(await store.read(head + 1)) == []
        with pytest.raises(HistoryTruncated):
            await store.read(head)

    async def test_compact_keeps_what_the_running_bus_needs(self, store: Store) -> None:
        records = _others(8)
        await store.append(records)
        seqs = _seqs(records)
        needed: list[int | None] = [seqs[5]]
        store.hold_history(lambda: needed[0])
        result = await store.compact(keep=1)
        assert (result.removed, result.first_seq) == (5, seqs[5])
        assert result.held_by is not None
        assert str(seqs[5]) in result.held_by
        needed[0] = None
        result = await store.compact(keep=1)
        assert (result.removed, result.first_seq, result.held_by) == (2, seqs[7], None)
        needed[0] = seqs[7]
        store.hold_history(None)
        result = await store.compact(keep=0)
        assert (result.removed, result.first_seq) == (1, seqs[7] + 1)

    async def test_appending_after_compacting_everything(self, store: Store) -> None:
        await store.append(_others(4))
        head = await store.head()
        assert (await store.compact(keep=0)).first_seq == head + 1
        later = _others(2, start=4)
        await store.append(later)
        if store.features.gapless:
            assert _seqs(later) == [head + 1, head + 2]
        assert _ids(await store.read(store.first_seq)) == _ids(later)

    async def test_readers_see_no_gap_while_the_store_compacts(self, store: Store) -> None:
        done = anyio.Event()
        truncated: list[tuple[int, HistoryTruncated]] = []

        async def write_and_compact() -> None:
            for round_ in range(_COMPACTION_ROUNDS):
                await store.append(_others(7, start=round_ * 7))
                await store.compact(keep=5)
                await anyio.lowlevel.checkpoint()
            done.set()

        async def read_in_pages() -> None:
            while not done.is_set():
                from_seq = store.first_seq
                try:
                    page = await store.read(from_seq, limit=3)
                except HistoryTruncated as exc:
                    truncated.append((from_seq, exc))
                    await anyio.lowlevel.checkpoint()
                    continue
                if page:
                    assert page[0].seq == from_seq, f"a read from {from_seq} began at {page[0].seq}"
                    assert _is_contiguous(_seqs(page))
                await anyio.lowlevel.checkpoint()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(read_in_pages)
                group.start_soon(write_and_compact)
        assert all(exc.first_seq > from_seq for from_seq, exc in truncated)
        head = await store.head()
        assert store.first_seq == head - 4
        assert _seqs(await store.read(store.first_seq)) == list(range(head - 4, head + 1))


class PersistentStoreConformance(StoreConformance):
    """The tests of `StoreFeatures.persistent`, on top of the whole base suite.

    The subclass also provides `reopen`. A persistent store keeps encoded
    records, so it must also refuse a record it cannot encode, all or nothing.
    """

    async def reopen(self, store: Store) -> Store:
        """Close ``store`` and return a new, opened instance on the same data.

        The suite closes what it returns.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement reopen()")

    @asynccontextmanager
    async def _reopened(self, store: Store) -> AsyncIterator[Store]:
        reopened = await self.reopen(store)
        try:
            yield reopened
        finally:
            await reopened.close()

    async def test_a_batch_with_an_unstorable_record_stores_nothing(self, store: Store) -> None:
        kept = _others(3)
        await store.append(kept)
        head = await store.head()
        refused = [*_others(2, start=3), new_record(_Opaque(value=object())), *_others(2, start=5)]
        with pytest.raises(StoreError):
            await store.append(refused)
        assert _ids(await _read_all(store)) == _ids(kept)
        after = _others(2, start=7)
        await store.append(after)
        if store.features.gapless:
            assert _seqs(after) == [head + 1, head + 2]
        assert _ids(await _read_all(store)) == _ids(kept + after)

    async def test_everything_survives_reopening(self, store: Store) -> None:
        records = [new_record(_Sample(text="kept", tags=("x",)), headers={"k": "v"}), *_others(4)]
        await store.append(records)
        stored = await store.read()
        letters = [_letter("billing", stored[0], 1), _letter("audit", stored[2], 2)]
        await store.add_dead_letters(letters)
        await store.save_checkpoints({"billing": 3, "audit": 5})
        head = await store.head()

        async with self._reopened(store) as reopened:
            assert await reopened.head() == head
            reread = await reopened.read()
            assert len(reread) == len(records)
            for actual, expected in zip(reread, records, strict=True):
                _assert_same_record(actual, expected)
            for actual_letter, expected_letter in zip(await reopened.dead_letters(), letters, strict=True):
                _assert_same_letter(actual_letter, expected_letter)
            assert await reopened.load_checkpoint("billing") == 3
            assert dict(await reopened.checkpoints()) == {"billing": 3, "audit": 5}
            later = _others(2, start=10)
            await reopened.append(later)
            assert min(_seqs(later)) > head
            if reopened.features.gapless:
                assert _seqs(later) == [head + 1, head + 2]

    async def test_event_ids_stay_unique_after_reopening(self, store: Store) -> None:
        records = _others(2)
        await store.append(records)
        async with self._reopened(store) as reopened:
            again = [new_record(_Other(index=5), event_id=records[1].event_id), *_others(1, start=6)]
            assert list(await reopened.append(again)) == [0]
            assert again[0].seq == records[1].seq
            assert _ids(await reopened.read()) == [*_ids(records), again[1].event_id]

    async def test_an_empty_store_reopens_empty(self, store: Store) -> None:
        async with self._reopened(store) as reopened:
            assert await reopened.head() == 0
            assert list(await reopened.read()) == []

    async def test_deleted_newest_seqs_are_not_reused_after_reopening(self, store: Store) -> None:
        await store.append(_others(4))
        head = await store.head()
        await self.delete_newest(store, 4)
        async with self._reopened(store) as reopened:
            assert await reopened.head() == head
            later = _others(1, start=4)
            await reopened.append(later)
            assert later[0].seq > head
            assert _seqs(await reopened.read()) == _seqs(later)

    async def test_first_seq_survives_reopening(self, store: Store) -> None:
        records = _others(6)
        await store.append(records)
        await store.compact(keep=2)
        async with self._reopened(store) as reopened:
            assert reopened.first_seq == records[4].seq
            with pytest.raises(HistoryTruncated):
                await reopened.read(1)
            assert _ids(await reopened.read(reopened.first_seq)) == _ids(records[4:])


class SharedStoreConformance(StoreConformance):
    """The tests of `StoreFeatures.shared_between_processes`, on top of the base suite.

    The subclass also provides `open_peer`.
    """

    async def open_peer(self, store: Store) -> Store:
        """Open a second instance on ``store``'s data, as another process would.

        The suite closes what it returns.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement open_peer()")

    async def test_wait_for_append_sees_a_peers_append(self, store: Store) -> None:
        await store.append(_others(2))
        after = await store.head()
        with anyio.fail_after(10):
            await store.wait_for_append(after - 1)
        peer = await self.open_peer(store)
        try:
            seen: list[Record] = []

            async def tail() -> None:
                while not seen:
                    await store.wait_for_append(after)
                    seen.extend(await store.read(after + 1))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as group:
                    group.start_soon(tail)
                    await anyio.lowlevel.checkpoint()
                    from_peer = _others(3, start=2)
                    await peer.append(from_peer)
            assert _ids(seen) == _ids(from_peer)
            assert await store.head() == from_peer[-1].seq
        finally:
            await peer.close()

    async def test_a_lease_holds_across_instances(self, store: Store) -> None:
        peer = await self.open_peer(store)
        try:
            assert await store.acquire_lease("billing", "a", 30)
            assert not await peer.acquire_lease("billing", "b", 30)
            await store.release_lease("billing", "a")
            assert await peer.acquire_lease("billing", "b", 30)
            assert not await store.acquire_lease("billing", "a", 30)
        finally:
            await peer.close()

    async def test_a_fence_holds_across_instances(self, store: Store) -> None:
        peer = await self.open_peer(store)
        try:
            stale = await store.acquire_lease("billing", "a", 30)
            assert stale is not None
            await store.release_lease("billing", "a")
            current = await peer.acquire_lease("billing", "b", 30)
            assert current is not None
            assert current > stale
            await peer.save_checkpoints({"billing": 9}, fence=LeaseFence("billing", current))
            with pytest.raises(LeaseLost):
                await store.save_checkpoints({"billing": 4}, fence=LeaseFence("billing", stale))
            assert await store.load_checkpoint("billing") == 9
        finally:
            await peer.close()

    async def test_instances_racing_for_a_lease_get_one(self, store: Store) -> None:
        peer = await self.open_peer(store)
        won: list[str] = []

        async def ask(instance: Store, holder: str) -> None:
            asks = range(_BATCHES_PER_WRITER)
            won.extend([holder for _ in asks if await instance.acquire_lease("billing", holder, 30)])

        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as group:
                    for n in range(_CONCURRENT_WRITERS // 2):
                        group.start_soon(ask, store, f"store-{n}")
                        group.start_soon(ask, peer, f"peer-{n}")
        finally:
            await peer.close()
        assert len(set(won)) == 1, f"several holders got the lease: {sorted(set(won))}"

    async def test_an_event_id_a_peer_stored_keeps_its_seq(self, store: Store) -> None:
        peer = await self.open_peer(store)
        try:
            from_peer = _others(2)
            await peer.append(from_peer)
            again = [new_record(_Other(index=5), event_id=from_peer[0].event_id)]
            assert list(await store.append(again)) == [0]
            assert again[0].seq == from_peer[0].seq
            event_id = uuid4()
            racing = [new_record(_Other(index=n), event_id=event_id) for n in range(2)]
            answers: list[Collection[int]] = []

            async def append(instance: Store, record: Record) -> None:
                answers.append(await instance.append([record]))

            with anyio.fail_after(30):
                async with anyio.create_task_group() as group:
                    group.start_soon(append, store, racing[0])
                    group.start_soon(append, peer, racing[1])
            assert racing[0].seq == racing[1].seq
            assert sorted(len(already) for already in answers) == [0, 1]
            assert _ids(await store.read()).count(event_id) == 1
        finally:
            await peer.close()

    async def test_a_peers_compaction_is_seen_by_reads(self, store: Store) -> None:
        records = _others(6)
        await store.append(records)
        peer = await self.open_peer(store)
        try:
            result = await peer.compact(keep=2)
        finally:
            await peer.close()
        assert result.first_seq == records[4].seq
        with pytest.raises(HistoryTruncated) as caught:
            await store.read(records[1].seq)
        assert caught.value.first_seq == records[4].seq
        assert store.first_seq == records[4].seq
        assert _ids(await store.read(records[4].seq)) == _ids(records[4:])


class BoundedStoreConformance(StoreConformance):
    """The tests of `StoreFeatures.bounded`, on top of the base suite.

    The subclass also provides `open_bounded`.
    """

    async def open_bounded(self, max_records: int) -> Store:
        """A new, opened, empty store that holds at most ``max_records`` records.

        The suite closes what it returns.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement open_bounded()")

    @asynccontextmanager
    async def _bounded(self, max_records: int) -> AsyncIterator[Store]:
        store = await self.open_bounded(max_records)
        try:
            yield store
        finally:
            await store.close()

    async def test_past_the_bound_the_oldest_records_go(self, store: Store) -> None:
        async with self._bounded(5) as bounded:
            records = _others(3) + _others(3, start=3) + _others(2, start=6)
            for batch in (records[:3], records[3:6], records[6:]):
                await bounded.append(batch)
            assert bounded.first_seq == records[3].seq
            assert _ids(await bounded.read(bounded.first_seq)) == _ids(records[3:])
            with pytest.raises(HistoryTruncated) as caught:
                await bounded.read(1)
            assert caught.value.first_seq == records[3].seq

    async def test_a_batch_larger_than_the_bound_keeps_its_newest(self, store: Store) -> None:
        async with self._bounded(4) as bounded:
            records = _others(10)
            await bounded.append(records)
            assert _ids(await bounded.read(bounded.first_seq)) == _ids(records[6:])
            assert bounded.first_seq == records[6].seq

    async def test_the_bound_is_hard(self, store: Store) -> None:
        async with self._bounded(3) as bounded:
            await bounded.append(_others(2))
            stored = await bounded.read()
            await bounded.save_checkpoints({"billing": stored[0].seq})
            await bounded.add_dead_letters([_letter("billing", stored[0], 1)])
            bounded.hold_history(lambda: stored[0].seq)
            later = _others(20, start=2)
            for record in later:
                await bounded.append([record])
            assert _ids(await bounded.read(bounded.first_seq)) == _ids(later[-3:])
            (letter,) = await bounded.dead_letters()
            assert letter.record.event == stored[0].event


class RetentionStoreConformance(StoreConformance):
    """The tests of `StoreFeatures.retention`, on top of the base suite.

    The subclass also provides `open_with_retention`.
    """

    async def open_with_retention(self, store: Store, retention: Retention) -> Store:
        """Open a second instance on ``store``'s data that keeps ``retention``.

        The suite closes what it returns.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement open_with_retention()")

    @asynccontextmanager
    async def _retaining(self, store: Store, retention: Retention) -> AsyncIterator[Store]:
        retaining = await self.open_with_retention(store, retention)
        try:
            yield retaining
        finally:
            await retaining.close()

    async def test_appends_compact_in_the_background(self, store: Store) -> None:
        async with self._retaining(store, Retention(keep=10, compact_interval=0)) as retaining:
            records: list[Record] = []
            for batch in range(10):
                appended = _others(5, start=batch * 5)
                await retaining.append(appended)
                records.extend(appended)
            head = await retaining.head()
            assert retaining.first_seq == head - 9
            assert _ids(await retaining.read(retaining.first_seq)) == _ids(records[-10:])
            with pytest.raises(HistoryTruncated):
                await retaining.read(1)

    async def test_background_compaction_by_age(self, store: Store) -> None:
        async with self._retaining(store, Retention(keep_age=_AN_HOUR, compact_interval=0)) as retaining:
            old = [new_record(_Other(index=index), recorded_at=datetime.now(UTC) - 2 * _AN_HOUR) for index in range(5)]
            await retaining.append(old)
            young = _others(2, start=5)
            await retaining.append(young)
            assert retaining.first_seq == young[0].seq
            assert _ids(await retaining.read(retaining.first_seq)) == _ids(young)

    async def test_background_compaction_keeps_what_is_held(self, store: Store) -> None:
        await store.append(_others(3))
        stored = await store.read()
        await store.save_checkpoints({"audit": stored[0].seq})
        await store.add_dead_letters([_letter("billing", stored[0], 1)])
        async with self._retaining(store, Retention(keep=1, compact_interval=0)) as retaining:
            needed = [stored[0].seq]
            retaining.hold_history(lambda: needed[0])
            for index in range(5):
                await retaining.append(_others(1, start=10 + index))
            assert retaining.first_seq == stored[0].seq
            await retaining.save_checkpoints({"audit": stored[-1].seq + 3})
            await retaining.append(_others(1, start=20))
            assert retaining.first_seq == stored[0].seq
            await retaining.delete_dead_letters([letter.id for letter in await retaining.dead_letters()])
            needed[0] = stored[-1].seq + 1
            await retaining.append(_others(1, start=21))
            assert retaining.first_seq == stored[-1].seq + 1

    async def test_compact_by_hand_applies_the_stores_retention(self, store: Store) -> None:
        async with self._retaining(store, Retention(keep=3, compact_interval=3_600)) as retaining:
            await retaining.append(_others(2))
            for index in range(6):
                await retaining.append(_others(1, start=2 + index))
            head = await retaining.head()
            assert retaining.first_seq < head - 2
            result = await retaining.compact()
            assert result.first_seq == head - 2
            assert _seqs(await retaining.read(result.first_seq)) == [head - 2, head - 1, head]


class ImmediateAppendConformance(StoreConformance):
    """The tests of `StoreFeatures.immediate_append`, on top of the base suite.

    The store's `ImmediateAppend` (what `immediate_append` returns for it)
    must append exactly as `Store.append` does, mixed with it in any order.
    A store that is also bounded runs the bound's tests through it too, with
    `BoundedStoreConformance`'s ``open_bounded``.
    """

    async def test_the_declared_immediate_append_is_implemented(self, store: Store) -> None:
        assert _immediate(store) is not None

    async def test_immediate_appends_number_like_append(self, store: Store) -> None:
        fast = _immediate(store)
        first, second, third, fourth = _others(2), _others(1, start=2), _others(3, start=4), _others(1, start=7)
        made = _others(2, start=8)
        await store.append(first)
        fast.append_now(second)
        entry = _append_entry(fast, 3)
        fast.append_now(third)
        fast.append_new(made)
        await store.append(fourth)
        seqs = [*_seqs(first), *_seqs(second), entry[0], *_seqs(third), *_seqs(made), *_seqs(fourth)]
        assert seqs == sorted(set(seqs))
        assert all(_is_contiguous(_seqs(batch)) for batch in (first, second, third, made, fourth))
        if store.features.gapless:
            assert seqs == list(range(1, 11))
        assert await store.head() == seqs[-1]
        assert _seqs(await _read_all(store)) == seqs

    async def test_immediate_appends_keep_event_ids_unique(self, store: Store) -> None:
        fast = _immediate(store)
        entry = _append_entry(fast, 0)
        stored = _others(1, start=1)
        await store.append(stored)
        again = [
            new_record(_Other(index=5), event_id=entry[4]),
            new_record(_Other(index=6), event_id=stored[0].event_id),
        ]
        assert sorted(fast.append_now(again)) == [0, 1]
        assert _seqs(again) == [entry[0], stored[0].seq]
        now = _others(1, start=7)
        fast.append_now(now)
        assert list(await store.append([new_record(_Other(index=8), event_id=now[0].event_id)])) == [0]
        made = _others(1, start=9)
        fast.append_new(made)
        again = [new_record(_Other(index=10), event_id=made[0].event_id)]
        assert list(fast.append_now(again)) == [0], "an id appended new is found by the next lookup"
        assert _seqs(again) == _seqs(made)
        assert _seqs(await store.read()) == [entry[0], stored[0].seq, now[0].seq, made[0].seq]

    async def test_append_now_of_nothing_changes_nothing(self, store: Store) -> None:
        fast = _immediate(store)
        records = _others(2)
        await store.append(records)
        head = await store.head()
        fast.append_now([])
        assert await store.head() == head
        assert _ids(await store.read()) == _ids(records)

    async def test_every_field_appended_now_round_trips(self, store: Store) -> None:
        rich = new_record(
            _Sample(text="café ✓", number=-(2**53), tags=("a", "β"), at=_FIXED_TIME),
            recorded_at=_FIXED_TIME,
            correlation_id=uuid4(),
            causation_id=uuid4(),
            headers={"origin": "billing", "ünï": "çødé"},
        )
        compact = new_record(_Other(index=7), event_id=uuid4().int, recorded_at=_FIXED_TIME_NS)
        rich.depth = 5
        made = new_record(_Sample(text="new", tags=("ü",), at=_FIXED_TIME), headers={"h": "v"})
        _immediate(store).append_now([rich, compact])
        _immediate(store).append_new([made])
        stored = await store.read()
        for actual, expected in zip(stored, [rich, compact, made], strict=True):
            _assert_same_record(actual, expected)
        assert stored[0].depth == 5

    async def test_an_entry_reads_back_as_its_record(self, store: Store) -> None:
        event = _Sample(text="entry", nested={"primes": [2, 3]})
        event_id = uuid4().int
        entry = _immediate(store).append_entry(event, "eventbus.conformance.Sample", 3, event_id, _FIXED_TIME_NS)
        assert entry == (entry[0], event, "eventbus.conformance.Sample", 3, event_id, _FIXED_TIME_NS)
        assert entry[0] == await store.head()
        for _ in range(2):  # a store may build the record on the first read: the second sees the same
            (record,) = await store.read()
            _assert_same_record(record, Record(*entry))
            assert record.event_id == UUID(int=event_id)
            assert record.correlation_id == record.event_id
            assert record.causation_id is None
            assert dict(record.headers) == {}
            assert record.depth == 0

    async def test_entries_are_read_by_type_and_in_ranges(self, store: Store) -> None:
        fast = _immediate(store)
        await store.append(_others(1))
        sample = _append_entry(fast, 1, sample=True)
        other = _append_entry(fast, 2)
        fast.append_now(_others(1, start=3))
        (by_type,) = await store.read(types=["eventbus.conformance.Sample"])
        assert (by_type.seq, by_type.event) == (sample[0], sample[1])
        assert _seqs(await store.read(other[0], to_seq=other[0])) == [other[0]]
        assert _seqs(await store.read(sample[0], limit=2)) == [sample[0], other[0]]

    async def test_deleted_newest_seqs_are_not_reused_by_immediate_appends(self, store: Store) -> None:
        fast = _immediate(store)
        records = _others(3)
        await store.append(records)
        await self.delete_newest(store, 2)
        entry_seq = _append_entry(fast, 3)[0]
        later = _others(1, start=4)
        fast.append_now(later)
        assert records[-1].seq < entry_seq < later[0].seq
        if store.features.gapless:
            assert (entry_seq, later[0].seq) == (records[-1].seq + 1, records[-1].seq + 2)
        assert _seqs(await store.read()) == [records[0].seq, entry_seq, later[0].seq]

    async def test_immediate_appends_keep_history_from_first_seq(self, store: Store) -> None:
        fast = _immediate(store)
        seqs = [_append_entry(fast, index)[0] for index in range(4)]
        later = _others(2, start=4)
        fast.append_now(later)
        seqs += _seqs(later)
        head = await store.head()
        result = await store.compact(keep=2)
        assert result.first_seq == store.first_seq == head - 1
        with pytest.raises(HistoryTruncated):
            await store.read(seqs[0])
        assert _seqs(await store.read(store.first_seq)) == [seq for seq in seqs if seq >= head - 1]
        if not store.features.bounded:
            return
        assert isinstance(self, BoundedStoreConformance), "a bounded store's module subclasses BoundedStoreConformance"
        async with self._bounded(3) as bounded:
            fast = _immediate(bounded)
            await bounded.append(_others(2))
            entries = [_append_entry(fast, index)[0] for index in range(2, 5)]
            assert bounded.first_seq == entries[0]
            assert _seqs(await bounded.read(bounded.first_seq)) == entries
            later = _others(2, start=5)
            fast.append_now(later)
            assert bounded.first_seq == entries[2]
            assert _seqs(await bounded.read(bounded.first_seq)) == [entries[2], *_seqs(later)]
            with pytest.raises(HistoryTruncated):
                await bounded.read(entries[1])


def _immediate(store: Store) -> ImmediateAppend:
    fast = immediate_append(store)
    assert fast is not None, f"{type(store).__name__}.features.immediate_append is False"
    return fast


def _append_entry(fast: ImmediateAppend, index: int, *, sample: bool = False) -> tuple[Any, ...]:
    """Append an `_Other` (or a `_Sample`) event through ``append_entry``, as the bus's publish does."""
    event: Event = _Sample(text=str(index)) if sample else _Other(index=index)
    cls = type(event)
    return fast.append_entry(event, cls.__event_type__, cls.__event_version__, uuid4().int, time.time_ns())


class _Projected(Event, name="eventbus.conformance.Projected"):
    """What the projection tests project: a number."""

    n: int


class _Derived(Event, name="eventbus.conformance.Derived"):
    """What a projection publishes through its transaction."""

    n: int


class _SqlDatabase:
    """The hooks the suites of `StoreFeatures.transactions` share: a store whose
    data lives in a SQL database the test reaches on connections of its own."""

    def fresh(self, store: Store) -> Store:
        """A new, unopened instance on ``store``'s data (a bus opens and closes it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement fresh()")

    def table(self, name: str) -> str:
        """The name to create table ``name`` under, qualified as the database needs."""
        raise NotImplementedError(f"{type(self).__name__} must implement table()")

    async def sql(self, store: Store, statement: str) -> list[tuple[Any, ...]]:
        """Run ``statement`` on a connection of the test's own to ``store``'s database; its rows."""
        raise NotImplementedError(f"{type(self).__name__} must implement sql()")

    async def _numbers_table(self, store: Store, prefix: str) -> str:
        """A new table of one column, ``n``, in ``store``'s database: its name."""
        table = self.table(f"{prefix}_{uuid4().hex[:8]}")
        await self.sql(store, f"CREATE TABLE {table} (n BIGINT NOT NULL)")
        return table

    async def _numbers(self, store: Store, table: str) -> list[int]:
        return sorted(row[0] for row in await self.sql(store, f"SELECT n FROM {table}"))


class TransactionsConformance(_SqlDatabase, StoreConformance):
    """The tests of `StoreFeatures.transactions` for projections, on top of the base suite.

    A projection (a durable subscription whose handler takes a
    `Transaction`) keeps a table of the test's in the store's database. The
    subclass provides `fresh` (a bus needs a store it opens itself), `table`,
    `param` and `sql` for the database's dialect. The outbox half of the
    feature is `OutboxConformance`, which the store's module runs too.
    """

    def param(self, number: int) -> str:
        """The driver's placeholder for argument ``number`` (from 1): ``?`` or ``$1``."""
        raise NotImplementedError(f"{type(self).__name__} must implement param()")

    def _projecting_bus(
        self, store: Store, view: str, fail: Collection[int] = (), **options: Any
    ) -> tuple[EventBus, list[int]]:
        """A bus projecting `_Projected` events into ``view`` (``"view"`` is
        the subscription); the handler raises, after its write, for each
        ``n`` in ``fail``. Also the list of the ``n`` of each call."""
        bus = EventBus(store=self.fresh(store))
        calls: list[int] = []

        @bus.subscribe(_Projected, durable=True, name="view", **options)
        async def project(event: _Projected, tx: Transaction) -> None:
            calls.append(event.n)
            await tx.execute(f"INSERT INTO {view} (n) VALUES ({self.param(1)})", event.n)
            if event.n in fail:
                raise RuntimeError(f"projecting {event.n} failed")

        return bus, calls

    async def test_a_projections_writes_and_checkpoint_commit_together(self, store: Store) -> None:
        view = await self._numbers_table(store, "view")
        bus, _calls = self._projecting_bus(store, view)
        async with bus:
            seqs = await bus.publish_many([_Projected(n=n) for n in range(20)])
            await bus.drain()
        assert await self._numbers(store, view) == list(range(20))
        assert (await store.checkpoints())["view"] == seqs[-1]

    async def test_a_failed_attempt_rolls_back_before_the_retry(self, store: Store) -> None:
        view = await self._numbers_table(store, "view")
        bus = EventBus(store=self.fresh(store))
        attempts: defaultdict[int, int] = defaultdict(int)

        @bus.subscribe(_Projected, durable=True, name="view", retry=Retry(attempts=3, backoff=0.001, jitter=0.0))
        async def project(event: _Projected, tx: Transaction) -> None:
            await tx.execute(f"INSERT INTO {view} (n) VALUES ({self.param(1)})", event.n)
            attempts[event.n] += 1
            if attempts[event.n] < 3:
                raise RuntimeError("flaky")

        async with bus:
            await bus.publish_many([_Projected(n=n) for n in range(5)])
            await bus.drain()
        assert await self._numbers(store, view) == list(range(5))  # the first two writes of each rolled back
        assert dict(attempts) == dict.fromkeys(range(5), 3)

    async def test_a_dead_letter_and_the_checkpoint_past_it_commit_together(self, store: Store) -> None:
        view = await self._numbers_table(store, "view")
        bus, _calls = self._projecting_bus(store, view, fail={2})
        async with bus:
            seqs = await bus.publish_many([_Projected(n=n) for n in range(4)])
            await bus.drain()
            letters = await bus.dead_letters.list()
        assert await self._numbers(store, view) == [0, 1, 3]  # the failed write rolled back
        assert [(letter.subscription, letter.record.seq) for letter in letters] == [("view", seqs[2])]
        assert (await store.checkpoints())["view"] == seqs[-1]

    async def test_a_restarted_projection_applies_each_event_once(self, store: Store) -> None:
        view = await self._numbers_table(store, "view")
        bus, calls = self._projecting_bus(store, view)
        async with bus:
            await bus.publish_many([_Projected(n=n) for n in range(10)])
            await bus.drain()
        async with EventBus(store=self.fresh(store)) as publisher:  # published while the projection is down
            await publisher.publish_many([_Projected(n=n) for n in range(10, 15)])
        again, calls_again = self._projecting_bus(store, view)
        async with again:
            await again.drain()
        assert calls == list(range(10))
        assert calls_again == list(range(10, 15))
        assert await self._numbers(store, view) == list(range(15))

    async def test_replicas_share_a_projection_and_apply_each_event_once(self, store: Store) -> None:
        view = await self._numbers_table(store, "view")
        first, first_calls = self._projecting_bus(store, view)
        second = EventBus(store=self.fresh(store), lease_ttl=0.4)
        second_calls: list[int] = []
        last_applied = anyio.Event()

        @second.subscribe(_Projected, durable=True, name="view")
        async def project(event: _Projected, tx: Transaction) -> None:
            second_calls.append(event.n)
            await tx.execute(f"INSERT INTO {view} (n) VALUES ({self.param(1)})", event.n)
            if event.n == 59:
                last_applied.set()

        async with first:
            await first.publish_many([_Projected(n=n) for n in range(30)])
            await first.drain()
            async with second:  # stands by: the first holds the projection's lease
                await second.drain()
                assert second_calls == []
                await first.aclose()  # releases the lease: the second takes over from the checkpoint
                await second.publish_many([_Projected(n=n) for n in range(30, 60)])
                with anyio.fail_after(30):
                    await last_applied.wait()
        assert first_calls == list(range(30))
        assert second_calls == list(range(30, 60))
        assert await self._numbers(store, view) == list(range(60))

    async def test_what_a_projection_publishes_commits_with_its_writes(self, store: Store) -> None:
        view = await self._numbers_table(store, "view")
        bus = EventBus(store=self.fresh(store))
        refused: list[Exception] = []

        @bus.subscribe(_Projected, durable=True, name="view")
        async def project(event: _Projected, tx: Transaction) -> None:
            await tx.execute(f"INSERT INTO {view} (n) VALUES ({self.param(1)})", event.n)
            await tx.publish(_Derived(n=event.n))
            if event.n == 1:
                raise RuntimeError("rolled back, with what it published")
            if event.n == 2:
                try:
                    await bus.publish(_Derived(n=-1))
                except TransactionError as exc:  # only through tx: it commits with the projection
                    refused.append(exc)

        async with bus:
            await bus.publish_many([_Projected(n=n) for n in range(3)])
            await bus.drain()
        derived = [record.event for record in await _read_all(store) if record.type == _Derived.__event_type__]
        assert derived == [_Derived(n=0), _Derived(n=2)]
        assert await self._numbers(store, view) == [0, 2]
        assert len(refused) == 1

    async def test_a_statement_the_database_refuses_is_a_store_error(self, store: Store) -> None:
        bus = EventBus(store=self.fresh(store))

        @bus.subscribe(_Projected, durable=True, name="view")
        async def project(event: _Projected, tx: Transaction) -> None:
            await tx.execute(f"INSERT INTO {self.table('no_such_table')} (n) VALUES ({self.param(1)})", event.n)

        async with bus:
            await bus.publish(_Projected(n=1))
            await bus.drain()
            [letter] = await bus.dead_letters.list()
        assert letter.error_type == f"{StoreError.__module__}.{StoreError.__qualname__}"

    async def test_rebuild_starts_a_projection_over_with_the_applications_reset(self, store: Store) -> None:
        view = await self._numbers_table(store, "view")
        bus, _calls = self._projecting_bus(store, view)
        async with bus:
            await bus.publish_many([_Projected(n=n) for n in range(5)])
            await bus.drain()
            with pytest.raises(TransactionError, match="holds its lease"):
                await rebuild_projection(store, "view")

        async def failing_reset(tx: Transaction) -> None:
            await tx.execute(f"DELETE FROM {view}")
            raise RuntimeError("the reset failed")

        with pytest.raises(RuntimeError, match="the reset failed"):
            await rebuild_projection(store, "view", failing_reset)
        assert await self._numbers(store, view) == list(range(5))  # rolled back with the checkpoint's reset
        assert (await store.checkpoints())["view"] == 5

        async def reset(tx: Transaction) -> None:
            await tx.execute(f"DELETE FROM {view}")

        await rebuild_projection(store, "view", reset)
        assert await self._numbers(store, view) == []
        assert (await store.checkpoints())["view"] == 0
        again, calls = self._projecting_bus(store, view)
        async with again:
            await again.drain()
        assert calls == list(range(5))
        assert await self._numbers(store, view) == list(range(5))


class _Placed(Event, name="eventbus.conformance.Placed"):
    """What the outbox tests publish with an application's row: its order number."""

    order: int


_OUTBOX_WAIT = 30  # seconds a test waits for the bus to deliver what it committed


class OutboxConformance(_SqlDatabase):
    """The outbox half of `StoreFeatures.transactions`: `EventBus.transaction`
    and ``publish(..., transaction=conn)`` on a connection of the application's
    own, through the store's `Transactions` (``check_connection``,
    ``in_transaction``, ``begin`` and the `OpenTransaction` it returns).

    A store that declares transactions runs these tests beside
    `TransactionsConformance`: in the same test class, or in a class of its
    own when its driver's connections live on one event loop only (asyncpg's
    on asyncio), whose ``anyio_backend`` fixture then names that loop. The
    class provides the ``store`` fixture, `fresh`, `table` and `sql` as for
    `TransactionsConformance`, and `application` and `execute`.
    """

    def application(self, store: Store) -> AbstractAsyncContextManager[Any]:
        """A connection to ``store``'s database of the driver its `Transactions.begin`
        takes, as the application holds one, with no transaction open; closed on exit."""
        raise NotImplementedError(f"{type(self).__name__} must implement application()")

    async def execute(self, connection: Any, statement: str) -> None:
        """Run ``statement`` on the application's ``connection`` the driver's own way."""
        raise NotImplementedError(f"{type(self).__name__} must implement execute()")

    @asynccontextmanager
    async def _running(self, store: Store) -> AsyncIterator[tuple[EventBus, list[int]]]:
        """A bus on ``store``'s data, and the order numbers a ``from_seq=1`` subscription saw, in order."""
        bus = EventBus(store=self.fresh(store))
        seen: list[int] = []

        @bus.subscribe(_Placed, from_seq=1, name="seen")
        async def see(event: _Placed) -> None:
            seen.append(event.order)

        async with bus:
            yield bus, seen

    @staticmethod
    def _in_transaction(bus: EventBus, connection: Any) -> bool:
        store = transactions(bus.store)
        assert store is not None, f"{type(bus.store).__name__}.features.transactions is False"
        return store.in_transaction(connection)

    async def test_a_committed_block_stores_its_row_and_its_event_and_delivers_it(self, store: Store) -> None:
        orders = await self._numbers_table(store, "orders")
        async with self._running(store) as (bus, seen), self.application(store) as connection:
            async with bus.transaction(connection) as tx:
                assert tx.connection is connection
                await self.execute(connection, f"INSERT INTO {orders} (n) VALUES (1)")
                assert await tx.publish(_Placed(order=1)) == 1
                assert list(await bus.store.read(1)) == []  # not visible before the commit
            assert not self._in_transaction(bus, connection)
            await bus.drain(timeout=_OUTBOX_WAIT)  # waits for the subscription that tails the store
            assert seen == [1]
            assert await self._numbers(store, orders) == [1]
            assert await bus.publish(_Placed(order=2)) == 2
            await bus.drain(timeout=_OUTBOX_WAIT)
            assert seen == [1, 2]

    async def test_a_block_that_raises_stores_and_delivers_nothing_and_leaves_no_gap(self, store: Store) -> None:
        orders = await self._numbers_table(store, "orders")
        async with self._running(store) as (bus, seen), self.application(store) as connection:

            async def place_orders() -> None:
                async with bus.transaction(connection) as tx:
                    await self.execute(connection, f"INSERT INTO {orders} (n) VALUES (1)")
                    assert await tx.publish_many([_Placed(order=1), _Placed(order=2)]) == [1, 2]
                    raise LookupError("out of stock")

            with pytest.raises(LookupError, match="out of stock"):
                await place_orders()
            assert not self._in_transaction(bus, connection)
            assert await self._numbers(store, orders) == []
            assert await bus.store.head() == 0
            assert await bus.publish(_Placed(order=3)) == 1  # the rolled-back seqs are the next ones
            await bus.drain(timeout=_OUTBOX_WAIT)
            assert seen == [3]

    async def test_a_block_cancelled_before_its_end_still_commits_or_rolls_back_whole(self, store: Store) -> None:
        # `OpenTransaction.commit` and `rollback` run to their end under cancellation:
        # an await they make is shielded, or the connection would stay in its transaction
        orders = await self._numbers_table(store, "orders")
        async with self._running(store) as (bus, seen), self.application(store) as connection:
            with anyio.CancelScope() as scope:
                async with bus.transaction(connection) as tx:
                    await self.execute(connection, f"INSERT INTO {orders} (n) VALUES (1)")
                    await tx.publish(_Placed(order=1))
                    scope.cancel()  # pending when the block ends normally: the commit runs to its end
            assert not self._in_transaction(bus, connection)
            assert await self._numbers(store, orders) == [1]
            assert bus.head == 1
            with anyio.CancelScope() as scope:
                async with bus.transaction(connection) as tx:
                    await self.execute(connection, f"INSERT INTO {orders} (n) VALUES (2)")
                    await tx.publish(_Placed(order=2))
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()  # the block ends with the cancellation: rolled back whole
            assert scope.cancelled_caught
            assert not self._in_transaction(bus, connection)
            assert await self._numbers(store, orders) == [1]
            assert await bus.publish(_Placed(order=3)) == 2  # the store's lock was given back, with no gap
            await bus.drain(timeout=_OUTBOX_WAIT)
            assert seen == [1, 3]

    async def test_publish_joins_a_transaction_the_application_began(self, store: Store) -> None:
        orders = await self._numbers_table(store, "orders")
        async with self._running(store) as (bus, seen), self.application(store) as connection:
            await self.execute(connection, "BEGIN")
            await self.execute(connection, f"INSERT INTO {orders} (n) VALUES (1)")
            assert await bus.publish(_Placed(order=1), transaction=connection) == 1
            assert await bus.publish_many([_Placed(order=2)], transaction=connection) == [2]
            await self.execute(connection, "COMMIT")
            await self.execute(connection, "BEGIN")
            await self.execute(connection, f"INSERT INTO {orders} (n) VALUES (3)")
            await bus.publish(_Placed(order=3), transaction=connection)
            await self.execute(connection, "ROLLBACK")
            assert await bus.publish(_Placed(order=4)) == 3
            await bus.drain(timeout=_OUTBOX_WAIT)
            assert seen == [1, 2, 4]
            assert await self._numbers(store, orders) == [1]

    async def test_a_connection_in_the_wrong_state_is_refused(self, store: Store) -> None:
        async with self._running(store) as (bus, _), self.application(store) as connection:
            with pytest.raises(TransactionError, match="no transaction is open"):
                await bus.publish(_Placed(order=1), transaction=connection)
            await self.execute(connection, "BEGIN")
            with pytest.raises(TransactionError, match="already open"):
                async with bus.transaction(connection):
                    pass
            await self.execute(connection, "ROLLBACK")
            assert await bus.store.head() == 0

    async def test_a_plain_publish_inside_an_open_transaction_raises_instead_of_deadlocking(self, store: Store) -> None:
        async with self._running(store) as (bus, seen), self.application(store) as connection:
            async with bus.transaction(connection) as tx:
                with pytest.raises(TransactionError, match="plain publish from inside an open transaction"):
                    await bus.publish(_Placed(order=0))
                with pytest.raises(TransactionError, match="plain publish from inside an open transaction"):
                    await bus.publish_many([_Placed(order=0)])
                await tx.publish(_Placed(order=1))
            await self.execute(connection, "BEGIN")
            await bus.publish(_Placed(order=2), transaction=connection)
            with pytest.raises(TransactionError, match="plain publish from inside an open transaction"):
                await bus.publish(_Placed(order=0))
            await self.execute(connection, "COMMIT")
            assert await bus.publish(_Placed(order=3)) == 3  # the transaction is over: allowed again
            await bus.drain(timeout=_OUTBOX_WAIT)
            assert seen == [1, 2, 3]

    async def test_event_ids_are_idempotent_inside_transactions(self, store: Store) -> None:
        stored_id, new_id = uuid4(), uuid4()
        async with self._running(store) as (bus, seen), self.application(store) as connection:
            assert await bus.publish(_Placed(order=1), event_id=stored_id) == 1
            async with bus.transaction(connection) as tx:
                assert await tx.publish(_Placed(order=-1), event_id=stored_id) == 1
                assert await tx.publish(_Placed(order=2), event_id=new_id) == 2
                assert await tx.publish_many(
                    [_Placed(order=-2), _Placed(order=3), _Placed(order=-1)], event_ids=[new_id, uuid4(), stored_id]
                ) == [2, 3, 1]
            await bus.drain(timeout=_OUTBOX_WAIT)
            assert seen == [1, 2, 3]
            assert await bus.publish(_Placed(order=-2), event_id=new_id) == 2
            with pytest.raises(ValueError, match="2 event_ids for 1 events"):
                await bus.publish_many([_Placed(order=0)], event_ids=[uuid4(), uuid4()], transaction=connection)
