"""What makes a projection, what it needs, and the handler shapes it takes (on real SQLite files)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from eventbus_sqlite import SqliteStore

from eventbus import BusState, Event, EventBus, Record, Transaction, TransactionError, rebuild_projection
from eventbus.testing import TestBus


class Noted(Event, name="eventbus.tests.projections.Noted"):
    n: int


async def _note(event: Noted, tx: Transaction) -> None:
    await tx.execute("INSERT INTO noted (n) VALUES (?)", event.n)


def _table(path: Path) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE noted (n INTEGER NOT NULL, seq INTEGER)")
    connection.close()


def _rows(path: Path) -> list[tuple[int, int | None]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT n, seq FROM noted ORDER BY n").fetchall()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("options", "needs"),
    [
        ({}, "durable=True with a name="),
        ({"durable": True, "concurrency": 2}, "concurrency=1"),
    ],
)
def test_a_projection_is_durable_and_one_at_a_time(options: dict[str, object], needs: str) -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match=rf"subscription 'view' is a projection .* needs {needs}"):
        bus.subscribe(Noted, _note, name="view", **options)  # type: ignore[call-overload]
    assert "view" not in bus.subscriptions


def test_a_sync_projection_does_not_run_in_a_thread() -> None:
    def note(event: Noted, tx: Transaction) -> None: ...

    with pytest.raises(ValueError, match="needs in_thread=False"):
        EventBus().subscribe(Noted, note, name="view", durable=True, in_thread=True)


async def _transaction_first(tx: Transaction, event: Noted) -> None: ...


async def _two_transactions(event: Noted, tx: Transaction, other: Transaction) -> None: ...


@pytest.mark.parametrize("handler", [_transaction_first, _two_transactions])
def test_a_transaction_parameter_goes_after_the_event(handler: object) -> None:
    with pytest.raises(TypeError, match=r"must take \(event, tx: Transaction\) or \(event, record, tx: Transaction\)"):
        EventBus().subscribe(Noted, handler, name="view", durable=True)  # type: ignore[call-overload]


async def test_a_store_without_transactions_refuses_to_start_a_projection() -> None:
    bus = EventBus()  # a MemoryStore
    bus.subscribe(Noted, _note, name="view", durable=True)
    with pytest.raises(TransactionError, match=r"'view' is a projection .* MemoryStore"):
        async with bus:
            pass
    assert bus.state is BusState.STOPPED


async def test_a_testbus_refuses_a_projection_by_name(tmp_path: Path) -> None:
    bus = EventBus()
    bus.subscribe(Noted, _note, name="view", durable=True)
    with pytest.raises(TransactionError, match="test a projection on the bus itself"):
        async with TestBus(bus, store=SqliteStore(tmp_path / "events.db")):
            pass


async def test_sync_and_record_taking_handlers_project_too(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    bus = EventBus(store=SqliteStore(path))

    @bus.subscribe(Noted, durable=True, name="with-record", from_seq=1)
    async def with_record(event: Noted, record: Record, tx: Transaction) -> None:
        await tx.execute("INSERT INTO noted (n, seq) VALUES (?, ?)", event.n, record.seq)

    @bus.subscribe(Noted, durable=True, name="sync", from_seq=1)
    def sync(event: Noted, tx: Transaction) -> None:
        assert isinstance(tx.connection, sqlite3.Connection)
        tx.connection.execute("INSERT INTO noted (n) VALUES (?)", (event.n + 100,))

    async with EventBus(store=SqliteStore(path)):
        pass  # creates the file
    await anyio.to_thread.run_sync(_table, path)
    async with bus:
        await bus.publish_many([Noted(n=1), Noted(n=2)])
        await bus.drain()
    assert await anyio.to_thread.run_sync(_rows, path) == [(1, 1), (2, 2), (101, None), (102, None)]


async def test_a_projections_reset_cannot_publish(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "events.db")
    await store.open()
    try:
        await store.save_checkpoints({"view": 3})

        async def reset(tx: Transaction) -> None:
            await tx.publish(Noted(n=1))

        with pytest.raises(TransactionError, match="cannot publish: no bus runs it"):
            await rebuild_projection(store, "view", reset)
        assert await store.checkpoints() == {"view": 3}  # nothing changed
        assert await store.head() == 0
    finally:
        await store.close()
