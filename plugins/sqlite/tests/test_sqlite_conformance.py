"""`SqliteStore` against the store conformance suite, on real files."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from eventbus_sqlite import SqliteStore

from eventbus.store import Retention, Store
from eventbus.testing.conformance import (
    OutboxConformance,
    PersistentStoreConformance,
    RetentionStoreConformance,
    SharedStoreConformance,
    TransactionsConformance,
)


class TestSqliteStore(
    PersistentStoreConformance,
    SharedStoreConformance,
    RetentionStoreConformance,
    TransactionsConformance,
    OutboxConformance,
):
    @pytest.fixture
    async def store(self, sqlite_store: SqliteStore) -> SqliteStore:
        return sqlite_store

    async def reopen(self, store: Store) -> Store:
        assert isinstance(store, SqliteStore)
        await store.close()
        reopened = SqliteStore(store.path, store.options)
        await reopened.open()
        return reopened

    async def open_peer(self, store: Store) -> Store:
        assert isinstance(store, SqliteStore)
        peer = SqliteStore(store.path, store.options)
        await peer.open()
        return peer

    def fresh(self, store: Store) -> Store:
        assert isinstance(store, SqliteStore)
        return SqliteStore(store.path, store.options)

    def table(self, name: str) -> str:
        return f'"{name}"'

    def param(self, number: int) -> str:
        return "?"

    async def sql(self, store: Store, statement: str) -> list[tuple[Any, ...]]:
        assert isinstance(store, SqliteStore)
        return await anyio.to_thread.run_sync(_run_sql, store.path, statement)

    @asynccontextmanager
    async def application(self, store: Store) -> AsyncIterator[sqlite3.Connection]:
        assert isinstance(store, SqliteStore)
        connection = sqlite3.connect(store.path, isolation_level=None)  # BEGIN and COMMIT as the test says
        try:
            yield connection
        finally:
            connection.close()

    async def execute(self, connection: Any, statement: str) -> None:
        connection.execute(statement)

    async def open_with_retention(self, store: Store, retention: Retention) -> Store:
        assert isinstance(store, SqliteStore)
        retaining = SqliteStore(store.path, store.options, retention=retention)
        await retaining.open()
        return retaining

    async def delete_newest(self, store: Store, count: int) -> None:
        assert isinstance(store, SqliteStore)
        with sqlite3.connect(store.path) as connection:
            connection.execute(
                "DELETE FROM eventbus_records WHERE seq IN "
                "(SELECT seq FROM eventbus_records ORDER BY seq DESC LIMIT ?)",
                (count,),
            )
        connection.close()


def _run_sql(path: Path, statement: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(path, timeout=10)
    try:
        with connection:
            return connection.execute(statement).fetchall()
    finally:
        connection.close()
