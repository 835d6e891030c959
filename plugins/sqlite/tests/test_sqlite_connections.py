"""The SQLite store closes every connection it opens, whatever gets cancelled when.

Python 3.13 warns about a connection left to the garbage collector (``ResourceWarning:
unclosed database``); 3.11 closes it silently. These tests see every connection the
store opens (the real `sqlite3.connect`, observed) and keep it alive, so one the store
loses is still open at the end and the test fails on every Python version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from eventbus_sqlite import SqliteStore

from eventbus import Event, EventBus, Record, StoreError
from eventbus.testing.conformance import new_record


class Tick(Event, name="eventbus_sqlite.tests.connections.Tick"):
    number: int


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[sqlite3.Connection]]:
    """Every connection opened during the test, held so that a lost one cannot be collected."""
    connections: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def observed(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connections.append(connection)
        return connection

    monkeypatch.setattr(sqlite3, "connect", observed)
    yield connections
    for connection in connections:  # a failed test's leftovers, closed so they warn nowhere else
        connection.close()


def _still_open(connections: list[sqlite3.Connection]) -> int:
    count = 0
    for connection in connections:
        try:
            connection.total_changes  # noqa: B018  # raises ProgrammingError once closed
        except sqlite3.ProgrammingError:
            continue
        count += 1
    return count


async def _store_with_readers(db_path: Path) -> SqliteStore:
    store = SqliteStore(db_path)
    await store.open()
    await store.append([new_record(Tick(number=n)) for n in range(10)])
    async with anyio.create_task_group() as tg:  # several reads at once: several idle readers afterwards
        for _ in range(3):
            tg.start_soon(store.read, 1)
    return store


async def test_a_read_cancelled_before_it_starts_keeps_no_connection(
    db_path: Path, opened: list[sqlite3.Connection]
) -> None:
    store = await _store_with_readers(db_path)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await store.head()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await store.read(1)
    await store.close()
    assert len(opened) >= 2
    assert _still_open(opened) == 0


async def test_close_finishes_in_a_cancelled_scope(db_path: Path, opened: list[sqlite3.Connection]) -> None:
    store = await _store_with_readers(db_path)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await store.close()
    assert _still_open(opened) == 0
    with pytest.raises(StoreError, match="is not open"):
        await store.head()


async def test_reads_in_flight_while_the_store_closes_close_their_connections(
    db_path: Path, opened: list[sqlite3.Connection]
) -> None:
    store = await _store_with_readers(db_path)
    outcomes: list[str] = []

    async def read() -> None:
        try:
            records = await store.read(1)
        except StoreError:
            outcomes.append("closed")
        else:
            outcomes.append(f"read {len(records)}")

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(read)
        tg.start_soon(store.close)
    assert len(outcomes) == 8
    assert set(outcomes) <= {"closed", "read 10"}
    assert _still_open(opened) == 0


async def _cancel_a_bus_while_it_reads(db_path: Path, events: int) -> None:
    # shutdown_timeout=0: the workers are cancelled at once, in the middle of their reads
    bus = EventBus(store=f"sqlite:///{db_path}", shutdown_timeout=0)
    handled = anyio.Event()

    async def count(event: Tick, record: Record) -> None:
        if event.number == events - 1:
            handled.set()

    for index in range(3):
        bus.subscribe(Tick, count, name=f"reader-{index}", from_seq=1)

    async def run_bus() -> None:
        async with bus:
            await bus.publish_many(Tick(number=number) for number in range(events))
            await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_bus)
            await handled.wait()
            tg.cancel_scope.cancel()


async def test_a_bus_cancelled_during_catch_up_and_tailing_leaves_no_connection_open(
    db_path: Path, opened: list[sqlite3.Connection]
) -> None:
    for round_ in range(1, 11):
        await _cancel_a_bus_while_it_reads(db_path, round_)
        assert _still_open(opened) == 0, f"round {round_}"
