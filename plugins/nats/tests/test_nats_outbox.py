"""The bridge as the outbox's relay, against the real NATS server: events a
service publishes in its own database transaction (``transaction=conn``) go
out once the transaction commits, never when it rolls back, and those
committed while the bridge's bus was stopped go out when it starts, with
nothing in the bridge made for it (its forwarding subscription is durable,
and reads the store).

On a SQLite file (asyncio and trio) and on PostgreSQL (asyncio only: the
application's asyncpg connection lives on an asyncio loop)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from eventbus_nats import NatsBridge, subject_of
from eventbus_postgres import PostgresStore
from eventbus_sqlite import SqliteStore
from nats_events import OrderPlaced
from nats_helpers import NATS_URL, stream_messages

from eventbus import EventBus, Record
from eventbus.store import Store

WAIT = 15.0  # seconds any one wait for the other side may take before the test fails
POSTGRES_URL = os.environ.get("EVENTBUS_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

Transact = Callable[[EventBus, str, bool], Awaitable[None]]
"""Inserts order ``order_id`` and publishes its `OrderPlaced` in one transaction
through the application's own connection; rolls it back when told to."""


class Received:
    """The `OrderPlaced` events the receiving service took in, and a way to wait for one."""

    def __init__(self) -> None:
        self.order_ids: list[str] = []
        self._changed = anyio.Event()

    def take(self, event: OrderPlaced, record: Record) -> None:
        self.order_ids.append(event.order_id)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, order_id: str) -> None:
        with anyio.fail_after(WAIT):
            while order_id not in self.order_ids:
                await self._changed.wait()


class RolledBack(Exception):
    """Raised inside a transaction to roll it back."""


async def relayed(stream: str, store: Callable[[], Store], transact: Transact) -> None:
    """The scenario, on whatever store ``store`` makes (a new instance each time)."""
    received = Received()
    audit = EventBus(plugins=[NatsBridge(NATS_URL, stream=stream, service="audit", inbound=[OrderPlaced])])
    audit.subscribe(OrderPlaced, received.take)

    def shop() -> EventBus:
        return EventBus(
            store=store(), plugins=[NatsBridge(NATS_URL, stream=stream, service="shop", outbound=[OrderPlaced])]
        )

    async with audit:
        async with shop() as bus:
            await transact(bus, "A1", False)
            await transact(bus, "R1", True)
            await transact(bus, "A2", False)
            await received.wait_for("A2")  # forwarded in seq order: R1 would have come before it
        # committed while the bridge's bus is stopped, through a bus without a bridge
        async with EventBus(store=store()) as bare:
            await transact(bare, "A3", False)
            await transact(bare, "R2", True)
        async with shop() as bus:
            await received.wait_for("A3")
            await bus.publish(OrderPlaced(order_id="A4"))
            await received.wait_for("A4")

    assert received.order_ids == ["A1", "A2", "A3", "A4"]
    subject = subject_of(stream, OrderPlaced.__event_type__)
    assert [subject for subject, _ in await stream_messages(stream)] == [subject] * 4


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "shop.db"


async def test_committed_transactions_on_a_sqlite_file_are_relayed_and_rolled_back_ones_never(
    stream: str, db_path: Path
) -> None:
    connection = sqlite3.connect(db_path, isolation_level=None)
    try:
        connection.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")

        async def transact(bus: EventBus, order_id: str, roll_back: bool) -> None:
            with _rolled_back(roll_back):
                async with bus.transaction(connection) as tx:
                    connection.execute("INSERT INTO orders (id) VALUES (?)", (order_id,))
                    await tx.publish(OrderPlaced(order_id=order_id))
                    if roll_back:
                        raise RolledBack

        await relayed(stream, lambda: SqliteStore(db_path), transact)
        assert [row[0] for row in connection.execute("SELECT id FROM orders ORDER BY id")] == ["A1", "A2", "A3"]
    finally:
        connection.close()


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema of the test PostgreSQL server for this test alone, dropped afterwards."""
    name = f"eventbus_nats_{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await connection.close()

    asyncio.run(drop())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_committed_transactions_on_postgresql_are_relayed_and_rolled_back_ones_never(
    stream: str, schema: str
) -> None:
    url = f"{POSTGRES_URL}?schema={schema}&max_pool_size=4"
    async with _connected() as connection:

        async def transact(bus: EventBus, order_id: str, roll_back: bool) -> None:
            # the schema is there once a store has opened it
            await connection.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".orders (id text PRIMARY KEY)')
            with _rolled_back(roll_back):
                async with connection.transaction():  # the application's own transaction
                    await connection.execute(f'INSERT INTO "{schema}".orders (id) VALUES ($1)', order_id)
                    await bus.publish(OrderPlaced(order_id=order_id), transaction=connection)
                    if roll_back:
                        raise RolledBack

        await relayed(stream, lambda: PostgresStore(url), transact)
        stored = await connection.fetch(f'SELECT id FROM "{schema}".orders ORDER BY id')
        assert [row[0] for row in stored] == ["A1", "A2", "A3"]


@asynccontextmanager
async def _connected() -> AsyncIterator[Any]:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        yield connection
    finally:
        await connection.close()


def _rolled_back(expected: bool) -> AbstractContextManager[object]:
    """Expects `RolledBack` when told to, and nothing otherwise."""
    return pytest.raises(RolledBack) if expected else nullcontext()
