"""`MemoryStore` against the store conformance suite, and its hard bound."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import replace
from typing import Any
from uuid import uuid4

import pytest

from eventbus import Event, EventBus, HistoryTruncated, Record
from eventbus.store import DEFAULT_MAX_RECORDS, MemoryStore, Store, immediate_append
from eventbus.testing.conformance import (
    BoundedStoreConformance,
    ImmediateAppendConformance,
    StoreConformance,
    new_record,
)


class TestMemoryStore(ImmediateAppendConformance, BoundedStoreConformance, StoreConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        store = MemoryStore()
        await store.open()
        yield store
        await store.close()

    async def delete_newest(self, store: Store, count: int) -> None:
        assert isinstance(store, MemoryStore)
        store.delete_newest(count)

    async def open_bounded(self, max_records: int) -> Store:
        store = MemoryStore(max_records=max_records)
        await store.open()
        return store


class Tick(Event, name="tests.store_memory.Tick"):
    n: int


def test_the_default_bound() -> None:
    assert MemoryStore().max_records == DEFAULT_MAX_RECORDS == 100_000
    assert MemoryStore(max_records=None).max_records is None


@pytest.mark.parametrize("max_records", [0, -1, True, 1.5, "10"])
def test_a_bad_bound_is_refused(max_records: Any) -> None:
    with pytest.raises(ValueError, match="max_records"):
        MemoryStore(max_records=max_records)


async def test_without_a_bound_everything_stays() -> None:
    store = MemoryStore(max_records=None)
    async with EventBus(store=store) as bus:
        await bus.publish_many(Tick(n=n) for n in range(3_000))
        assert store.first_seq == 1
        assert [record.seq async for record in bus.replay(Tick)] == list(range(1, 3_001))


async def test_replay_below_the_bound_raises_history_truncated() -> None:
    store = MemoryStore(max_records=2_000)
    async with EventBus(store=store) as bus:
        await bus.publish_many(Tick(n=n) for n in range(5_000))
        with pytest.raises(HistoryTruncated, match="3001") as caught:
            await anext(bus.replay(Tick))
        assert (caught.value.first_seq, caught.value.requested) == (3_001, 1)
        replay = bus.replay(Tick, from_seq=2_500)
        with pytest.raises(HistoryTruncated):
            await anext(replay)
        assert [record.seq async for record in replay] == list(range(3_001, 5_001))


class CountingAppends(MemoryStore):
    """Overrides `append` to count the records each append carries."""

    def __init__(self) -> None:
        super().__init__()
        self.appended = 0

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        self.appended += len(records)
        return await super().append(records)


class CountingMixin:
    """Overrides `append` from a mixin placed before `MemoryStore`."""

    appended = 0

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        self.appended += len(records)
        return await super().append(records)  # type: ignore[misc,no-any-return]


class MixedInCounting(CountingMixin, MemoryStore):
    pass


class CountingSubclass(CountingAppends):
    """Overrides nothing more: it inherits the withdrawn declaration."""


class CountingFastOnes(MemoryStore):
    """Overrides the fast appends only, without declaring its features."""

    def append_now(self, records: Sequence[Record]) -> Collection[int]:
        return super().append_now(records)


class CountingNewOnes(MemoryStore):
    """Overrides the append of records under new ids only, without declaring its features."""

    def append_new(self, records: Sequence[Record]) -> None:
        super().append_new(records)


class ReadingAloud(MemoryStore):
    """Overrides a method other than the appends."""

    async def head(self) -> int:
        return await super().head()


class DeclaredFast(CountingAppends):
    """Overrides `append` and says in its own body that the fast appends stay."""

    features = replace(MemoryStore.features, immediate_append=True)


@pytest.mark.parametrize(
    ("store_class", "immediate"),
    [
        (MemoryStore, True),
        (ReadingAloud, True),
        (CountingAppends, False),
        (MixedInCounting, False),
        (CountingSubclass, False),
        (CountingFastOnes, False),
        (CountingNewOnes, False),
        (DeclaredFast, True),
    ],
)
def test_which_subclasses_append_at_once(store_class: type[MemoryStore], immediate: bool) -> None:
    store = store_class()
    assert store.features.immediate_append is immediate
    assert (immediate_append(store) is store) is immediate
    assert store.features == replace(MemoryStore.features, immediate_append=immediate)


@pytest.mark.parametrize("store_class", [CountingAppends, MixedInCounting])
async def test_a_subclass_overriding_append_sees_every_append(store_class: type[CountingAppends]) -> None:
    store = store_class()
    async with EventBus(store=store) as bus:

        @bus.subscribe
        async def seen(event: Tick) -> None: ...

        await bus.publish(Tick(n=0))
        await bus.publish(Tick(n=1), headers={"h": "v"})
        await bus.publish_many([Tick(n=2), Tick(n=3)])
        await bus.drain()
    assert store.appended == 4


async def test_a_subclass_declaring_its_features_keeps_the_fast_appends() -> None:
    store = DeclaredFast()
    async with EventBus(store=store) as bus:
        await bus.publish(Tick(n=0))
        await bus.publish(Tick(n=1), headers={"h": "v"})
    assert store.appended == 0
    assert [record.seq for record in await store.read()] == [1, 2]


async def test_past_the_bound_an_id_is_forgotten_with_its_record_and_held_ids_stay_unique() -> None:
    store = MemoryStore(max_records=3)
    entries = [
        store.append_entry(Tick(n=n), Tick.__event_type__, Tick.__event_version__, uuid4().int, time.time_ns())
        for n in range(5)
    ]
    dropped, held = entries[0], entries[-1]
    again = [new_record(Tick(n=10), event_id=held[4]), new_record(Tick(n=11), event_id=dropped[4])]
    assert list(store.append_now(again)) == [0]
    assert again[0].seq == held[0]
    assert again[1].seq == 6, "an id whose record the bound dropped is stored anew"
    store.delete_newest(1)
    newest = [new_record(Tick(n=12), event_id=dropped[4])]
    assert list(store.append_now(newest)) == []
    assert [record.seq for record in await store.read(store.first_seq)][-1] == 7


async def test_the_bound_counts_records_held_not_seqs_across_a_gap() -> None:
    store = MemoryStore(max_records=3)

    def entry(n: int) -> int:
        event = Tick(n=n)
        return store.append_entry(event, Tick.__event_type__, Tick.__event_version__, uuid4().int, time.time_ns())[0]

    assert [entry(n) for n in range(3)] == [1, 2, 3]
    store.delete_newest(2)  # seqs 2 and 3 are not reused: the held seqs now have a gap
    assert [entry(3), entry(4)] == [4, 5]
    assert [record.seq for record in await store.read()] == [1, 4, 5], "three held: nothing dropped"
    store.append_now([new_record(Tick(n=5))])
    assert [record.seq for record in await store.read(store.first_seq)] == [4, 5, 6]
    assert store.first_seq == 2
    assert entry(6) == 7
    assert [record.seq for record in await store.read(store.first_seq)] == [5, 6, 7]
