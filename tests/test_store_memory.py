"""`MemoryStore` against the store conformance suite, and its hard bound."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventbus import Event, EventBus, HistoryTruncated
from eventbus.store import DEFAULT_MAX_RECORDS, MemoryStore, Store
from eventbus.testing.conformance import BoundedStoreConformance, StoreConformance


class TestMemoryStore(BoundedStoreConformance, StoreConformance):
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
