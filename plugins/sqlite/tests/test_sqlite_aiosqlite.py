"""Publishing in the transaction of an aiosqlite connection to the store's file
(what SQLAlchemy's ``sqlite+aiosqlite`` driver holds), on real files.

An aiosqlite connection's sqlite3 connection lives on aiosqlite's own thread,
and aiosqlite works on asyncio only: these tests run on asyncio, except the
one that shows trio gets a clear error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
import anyio
import pytest
from eventbus_sqlite import SqliteStore
from sqlite_tx_child import OrderPlaced

from eventbus import EventBus, TransactionError
from eventbus.testing import Collector

_DEADLINE = 30

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
"""aiosqlite works on asyncio only."""


@asynccontextmanager
async def running(db_path: Path) -> AsyncIterator[tuple[EventBus, Collector, aiosqlite.Connection]]:
    bus = EventBus(store=SqliteStore(db_path))
    seen = Collector(timeout=_DEADLINE)
    bus.subscribe(OrderPlaced, seen, from_seq=1, name="seen")
    async with bus, aiosqlite.connect(db_path, isolation_level=None) as connection:
        await connection.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY)")
        yield bus, seen, connection


async def orders(connection: aiosqlite.Connection) -> list[str]:
    async with connection.execute("SELECT id FROM orders ORDER BY id") as cursor:
        return [row[0] for row in await cursor.fetchall()]


@asyncio_only
async def test_a_transaction_commits_or_rolls_back_the_row_and_the_event_together(db_path: Path) -> None:
    async with running(db_path) as (bus, seen, connection):
        async with bus.transaction(connection) as tx:
            await connection.execute("INSERT INTO orders (id) VALUES ('A1')")
            assert await tx.publish(OrderPlaced(order_id="A1")) == 1
            assert await bus.store.read(1) == []
        assert not connection.in_transaction
        await bus.drain(timeout=_DEADLINE)
        assert [(r.seq, r.event) for r in seen.records] == [(1, OrderPlaced(order_id="A1"))]

        async def place_order() -> None:
            async with bus.transaction(connection) as tx:
                await connection.execute("INSERT INTO orders (id) VALUES ('A2')")
                assert await tx.publish_many([OrderPlaced(order_id="A2"), OrderPlaced(order_id="A3")]) == [2, 3]
                raise LookupError("out of stock")

        with pytest.raises(LookupError, match="out of stock"):
            await place_order()
        assert not connection.in_transaction
        assert await orders(connection) == ["A1"]
        assert await bus.store.head() == 1
        # a transaction the application began itself
        await connection.execute("BEGIN")
        await connection.execute("INSERT INTO orders (id) VALUES ('A4')")
        assert await bus.publish(OrderPlaced(order_id="A4"), transaction=connection) == 2
        await connection.commit()
        await seen.wait_for(2)
        assert [(r.seq, r.event.order_id) for r in seen.records] == [(1, "A1"), (2, "A4")]
        assert await orders(connection) == ["A1", "A4"]


@asyncio_only
async def test_a_cancelled_publish_leaves_the_transaction_whole(db_path: Path) -> None:
    async with running(db_path) as (bus, seen, connection):
        async with bus.transaction(connection) as tx:
            with anyio.CancelScope() as scope:
                scope.cancel()  # cancelled before the statements on aiosqlite's thread are awaited
                await tx.publish(OrderPlaced(order_id="A1"))
            # the append ran to its end: the transaction holds it, and the next one follows it
            assert await tx.publish(OrderPlaced(order_id="A2")) == 2
        await seen.wait_for(2)
        assert [r.event.order_id for r in seen.records] == ["A1", "A2"]


@asyncio_only
async def test_another_file_is_refused_before_anything_is_written(db_path: Path, tmp_path: Path) -> None:
    async with running(db_path) as (bus, _, _), aiosqlite.connect(tmp_path / "other.db") as other:
        with pytest.raises(TransactionError, match=r"other\.db open, another file than the store's"):
            async with bus.transaction(other):
                raise AssertionError("the block must not run")
        await other.execute("BEGIN")
        with pytest.raises(TransactionError, match="another file than the store's"):
            await bus.publish(OrderPlaced(order_id="A1"), transaction=other)
        await other.rollback()
        assert await bus.store.head() == 0
        async with other.execute("SELECT name FROM sqlite_master") as cursor:
            assert await cursor.fetchall() == []
    closed = aiosqlite.connect(db_path)  # never opened
    async with running(db_path) as (bus, _, _):
        with pytest.raises(TransactionError, match="the connection cannot be used"):
            async with bus.transaction(closed):
                raise AssertionError("the block must not run")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_gets_a_clear_error_for_an_aiosqlite_connection(db_path: Path) -> None:
    connection = aiosqlite.connect(db_path)  # the object, not connected: connecting needs asyncio
    async with EventBus(store=SqliteStore(db_path)) as bus:
        with pytest.raises(TransactionError, match="an aiosqlite connection works on asyncio only"):
            async with bus.transaction(connection):
                raise AssertionError("the block must not run")
        with pytest.raises(TransactionError, match="an aiosqlite connection works on asyncio only"):
            await bus.publish(OrderPlaced(order_id="A1"), transaction=connection)
        assert await bus.store.head() == 0
