"""The PostgreSQL store passes the store conformance suite, on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from eventbus_postgres import PostgresStore
from postgres_helpers import admin_sql, store_url

from eventbus.store import Retention, Store
from eventbus.testing.conformance import (
    PersistentStoreConformance,
    RetentionStoreConformance,
    SharedStoreConformance,
    TransactionsConformance,
)


async def _opened(schema: str, retention: Retention | None = None) -> PostgresStore:
    store = PostgresStore(store_url(schema), retention=retention)
    await store.open()
    return store


def _schema_of(store: Store) -> str:
    assert isinstance(store, PostgresStore)
    return store.options.schema


class TestPostgresStoreConformance(
    PersistentStoreConformance, SharedStoreConformance, RetentionStoreConformance, TransactionsConformance
):
    @pytest.fixture
    async def store(self, schema: str) -> AsyncIterator[PostgresStore]:
        self._schema = schema
        store = await _opened(schema)
        yield store
        await store.close()

    async def reopen(self, store: Store) -> Store:
        await store.close()
        return await _opened(_schema_of(store))

    async def open_peer(self, store: Store) -> Store:
        return await _opened(_schema_of(store))

    def fresh(self, store: Store) -> Store:
        return PostgresStore(store_url(_schema_of(store)))

    def table(self, name: str) -> str:
        return f'"{self._schema}"."{name}"'

    def param(self, number: int) -> str:
        return f"${number}"

    async def sql(self, store: Store, statement: str) -> list[tuple[Any, ...]]:
        rows = await anyio.to_thread.run_sync(admin_sql, statement)
        return [tuple(row) for row in rows]

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
