"""The PostgreSQL store passes the store conformance suite, on asyncio and trio (the outbox's
application connections, asyncpg's, on asyncio only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg
import pytest
from eventbus_postgres import PostgresStore
from postgres_helpers import POSTGRES_URL, admin_sql, store_url

from eventbus.store import Retention, Store
from eventbus.testing.conformance import (
    OutboxConformance,
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


class _PostgresHooks:
    """What both test classes tell the suites about a schema of the test's own."""

    _schema: str

    @pytest.fixture
    async def store(self, schema: str) -> AsyncIterator[PostgresStore]:
        self._schema = schema
        store = await _opened(schema)
        yield store
        await store.close()

    def fresh(self, store: Store) -> Store:
        return PostgresStore(store_url(_schema_of(store)))

    def table(self, name: str) -> str:
        return f'"{self._schema}"."{name}"'

    async def sql(self, store: Store, statement: str) -> list[tuple[Any, ...]]:
        rows = await anyio.to_thread.run_sync(admin_sql, statement)
        return [tuple(row) for row in rows]


class TestPostgresStoreConformance(
    _PostgresHooks,
    PersistentStoreConformance,
    SharedStoreConformance,
    RetentionStoreConformance,
    TransactionsConformance,
):
    async def reopen(self, store: Store) -> Store:
        await store.close()
        return await _opened(_schema_of(store))

    async def open_peer(self, store: Store) -> Store:
        return await _opened(_schema_of(store))

    def param(self, number: int) -> str:
        return f"${number}"

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


class TestPostgresOutboxConformance(_PostgresHooks, OutboxConformance):
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # an application's asyncpg connection lives on an asyncio loop

    @asynccontextmanager
    async def application(self, store: Store) -> AsyncIterator[Any]:
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            yield connection
        finally:
            await connection.close()

    async def execute(self, connection: Any, statement: str) -> None:
        await connection.execute(statement)
