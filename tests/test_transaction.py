"""Publishing in the application's transaction: declared by the store, checked once when the bus
starts, and refused with a clear error where the store does not take part (the `MemoryStore`).

The outbox itself is tested against real databases in the SQLite and PostgreSQL plugins' tests."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from uuid import uuid4

import pytest
from eventbus_sqlite import SqliteStore

from eventbus import BusClosed, Event, EventBus, MemoryStore, TransactionError
from eventbus.store import StoreFeatures, transactions
from eventbus.testing import TestBus


class Ping(Event, name="tests.transaction.Ping"):
    n: int


class ClaimsTransactions(MemoryStore):
    """A real `MemoryStore` that declares transactions it does not implement."""

    features = replace(MemoryStore.features, transactions=True)


def test_a_store_declares_transactions_and_is_then_its_own(tmp_path: Path) -> None:
    assert StoreFeatures().transactions is False
    assert transactions(MemoryStore()) is None
    store = SqliteStore(tmp_path / "events.db")
    assert transactions(store) is store


def test_declaring_transactions_without_implementing_them_is_a_type_error() -> None:
    with pytest.raises(
        TypeError,
        match=r"^ClaimsTransactions declares StoreFeatures\(transactions=True\) but does not implement "
        r"check_connection\(\) and in_transaction\(\) and begin\(\) and append_in\(\) and execute_in\(\) and "
        r"begin_projection\(\) of eventbus\.store\.Transactions",
    ):
        transactions(ClaimsTransactions())


async def test_the_bus_refuses_such_a_store_when_it_starts() -> None:
    bus = EventBus(store=ClaimsTransactions())
    with pytest.raises(TypeError, match="ClaimsTransactions declares"):
        async with bus:
            pass
    assert not bus.running


async def test_the_memory_store_refuses_transactions_and_stores_nothing(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "app.db")
    try:
        async with EventBus() as bus:
            with pytest.raises(TransactionError, match=r"MemoryStore.* does not take part in the application's"):
                await bus.publish(Ping(n=1), transaction=connection)
            with pytest.raises(TransactionError, match="does not take part"):
                await bus.publish_many([Ping(n=1)], transaction=connection)
            with pytest.raises(TransactionError, match="does not take part"):
                async with bus.transaction(connection):
                    raise AssertionError("the block must not run")
            assert await bus.store.head() == 0
            assert await bus.publish(Ping(n=2)) == 1
    finally:
        connection.close()


async def test_a_bus_that_is_not_running_refuses_transactions(tmp_path: Path) -> None:
    bus = EventBus(store=SqliteStore(tmp_path / "events.db"))
    connection = sqlite3.connect(tmp_path / "events.db")
    try:
        with pytest.raises(BusClosed, match="the bus is stopped"):
            await bus.publish(Ping(n=1), transaction=connection)
        with pytest.raises(BusClosed, match="cannot begin a transaction: the bus is stopped"):
            async with bus.transaction(connection):
                raise AssertionError("the block must not run")
    finally:
        connection.close()


async def test_a_transactional_publish_checks_the_event_first(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
    try:
        async with EventBus(store=SqliteStore(tmp_path / "events.db")) as bus, bus.transaction(connection) as tx:
            with pytest.raises(TypeError, match="can only publish Event instances, got str"):
                await tx.publish("not an event")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"events\[1\]"):
                await tx.publish_many([Ping(n=1), 2])  # type: ignore[list-item]
            with pytest.raises(TypeError, match=r"an event_id must be a UUID"):
                await tx.publish(Ping(n=1), event_id="abc")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"^event_ids\[1\]: an event_id must be a UUID"):
                await tx.publish_many([Ping(n=1), Ping(n=2)], event_ids=[uuid4(), "abc"])  # type: ignore[list-item]
            assert await tx.publish(Ping(n=1)) == 1
    finally:
        connection.close()


async def test_a_test_bus_refuses_transactions_even_on_a_store_that_offers_them(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
    try:
        async with TestBus(EventBus(), store=SqliteStore(tmp_path / "events.db")) as tb:
            with pytest.raises(TransactionError, match="does not take part"):
                async with tb.bus.transaction(connection):
                    raise AssertionError("the block must not run")
    finally:
        connection.close()
