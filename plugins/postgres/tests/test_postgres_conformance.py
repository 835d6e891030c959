"""The PostgreSQL store passes the store conformance suite, on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from eventbus_postgres import PostgresStore
from postgres_helpers import admin_sql, store_url

from eventbus.store import Retention, Store
from eventbus.testing.conformance import PersistentStoreConformance, RetentionStoreConformance, SharedStoreConformance


async def _opened(schema: str, retention: Retention | None = None) -> PostgresStore:
    store = PostgresStore(store_url(schema), retention=retention)
    await store.open()
    return store


def _schema_of(store: Store) -> str:
    assert isinstance(store, PostgresStore)
    return store.options.schema


class TestPostgresStoreConformance(PersistentStoreConformance, SharedStoreConformance, RetentionStoreConformance):
    @pytest.fixture
    async def store(self, schema: str) -> AsyncIterator[PostgresStore]:
        store = await _opened(schema)
        yield store
        await store.close()

    async def reopen(self, store: Store) -> Store:
        await store.close()
        return await _opened(_schema_of(store))

    async def open_peer(self, store: Store) -> Store:
        return await _opened(_schema_of(store))

    async def open_with_retention(self, store: Store, retention: Retention) -> Store:
        return await _opened(_schema_of(store), retention)

    async def delete_newest(self, store: Store, count: int) -> None:
        schema = _schema_of(store)
        await anyio.to_thread.run_sync(
            admin_sql,
            f'DELETE FROM "{schema}".records WHERE seq IN '
            f'(SELECT seq FROM "{schema}".records ORDER BY seq DESC LIMIT $1)',
            count,
        )
