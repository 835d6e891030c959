"""`MemoryStore` against the store conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventbus.store import MemoryStore, Store
from eventbus.testing.conformance import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        store = MemoryStore()
        await store.open()
        yield store
        await store.close()

    async def delete_newest(self, store: Store, count: int) -> None:
        assert isinstance(store, MemoryStore)
        store.delete_newest(count)
