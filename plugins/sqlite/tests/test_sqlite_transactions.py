"""Publishing in the application's own SQLite transaction (the outbox), on real files."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from uuid import UUID, uuid4

import anyio
import pytest
import sqlite_tx_child
from anyio.streams.buffered import BufferedByteReceiveStream
from eventbus_sqlite import SqliteStore
from sqlite_tx_child import OrderPlaced

from eventbus import EventBus, Record, StoreError, Transaction, TransactionError
from eventbus.middleware import Commit
from eventbus.testing import Collector

_CHILD = Path(sqlite_tx_child.__file__)
_DEADLINE = 30


@pytest.fixture
def connection(db_path: Path) -> Iterator[sqlite3.Connection]:
    """The application's own connection to the store's file, with its own table."""
    connection = sqlite3.connect(db_path, isolation_level=None)
    yield connection
    connection.close()


@asynccontextmanager
async def running(db_path: Path) -> AsyncIterator[tuple[EventBus, Collector]]:
    bus = EventBus(store=SqliteStore(db_path))
    seen = Collector(timeout=_DEADLINE)
    bus.subscribe(OrderPlaced, seen, from_seq=1, name="seen")
    async with bus:
        yield bus, seen


def orders(connection: sqlite3.Connection) -> list[str]:
    return [row[0] for row in connection.execute("SELECT id FROM orders ORDER BY id")]


async def test_publish_joins_a_transaction_the_application_began_itself(db_path: Path) -> None:
    connection = sqlite3.connect(db_path)  # the sqlite3 module's default: it begins transactions itself
    try:
        async with running(db_path) as (bus, seen):
            connection.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
            connection.commit()
            connection.execute("INSERT INTO orders (id) VALUES ('A1')")  # opens the transaction
            assert await bus.publish(OrderPlaced(order_id="A1"), transaction=connection) == 1
            assert await bus.publish_many([OrderPlaced(order_id="A2")], transaction=connection) == [2]
            connection.commit()
            await seen.wait_for(2)
            assert [r.event.order_id for r in seen.records] == ["A1", "A2"]
            connection.execute("INSERT INTO orders (id) VALUES ('A3')")
            await bus.publish(OrderPlaced(order_id="A3"), transaction=connection)
            connection.rollback()
            assert await bus.publish(OrderPlaced(order_id="A4")) == 3
            await seen.wait_for(3)
            assert [r.event.order_id for r in seen.records] == ["A1", "A2", "A4"]
    finally:
        connection.close()


async def test_the_connection_checked_last_is_not_checked_again_and_another_still_is(
    db_path: Path, connection: sqlite3.Connection, tmp_path: Path
) -> None:
    statements: list[str] = []

    def checks() -> int:
        return sum("database_list" in statement for statement in statements)

    async def publish_on(bus: EventBus, conn: sqlite3.Connection, order_id: str) -> None:
        conn.execute("BEGIN IMMEDIATE")
        await bus.publish(OrderPlaced(order_id=order_id), transaction=conn)
        conn.execute("COMMIT")

    other = sqlite3.connect(tmp_path / "other.db", isolation_level=None)
    second = sqlite3.connect(db_path, isolation_level=None)
    try:
        async with running(db_path) as (bus, seen):
            for conn in (connection, second):
                conn.set_trace_callback(statements.append)
            for n in range(3):
                async with bus.transaction(connection) as tx:
                    await tx.publish(OrderPlaced(order_id=f"B{n}"))
                await publish_on(bus, connection, f"C{n}")
            assert checks() == 1
            other.execute("BEGIN")
            with pytest.raises(TransactionError, match="another file"):  # refused, and remembers nothing
                await bus.publish(OrderPlaced(order_id="X"), transaction=other)
            other.execute("ROLLBACK")
            await publish_on(bus, connection, "D")
            assert checks() == 1
            await publish_on(bus, second, "E")  # another connection to the file: checked, and remembered instead
            await publish_on(bus, connection, "F")
            assert checks() == 3
            await seen.wait_for(9)
            order_ids = [record.event.order_id for record in seen.records]
            assert order_ids == ["B0", "C0", "B1", "C1", "B2", "C2", "D", "E", "F"]
        async with running(db_path) as (bus, _):  # a store opened again checks again
            await publish_on(bus, connection, "G")
            assert checks() == 4
    finally:
        connection.set_trace_callback(None)
        other.close()
        second.close()


async def test_a_connection_to_another_database_is_refused_before_anything_is_written(
    db_path: Path, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "other.db", isolation_level=None)
    in_memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        async with running(db_path) as (bus, _):
            other.execute("BEGIN")
            with pytest.raises(TransactionError, match=r"other\.db open, another file than the store's"):
                await bus.publish(OrderPlaced(order_id="A1"), transaction=other)
            other.execute("ROLLBACK")
            with pytest.raises(TransactionError, match="another file"):
                async with bus.transaction(other):
                    raise AssertionError("the block must not run")
            assert not other.in_transaction
            with pytest.raises(TransactionError, match="in-memory or temporary database"):
                async with bus.transaction(in_memory):
                    raise AssertionError("the block must not run")
            with pytest.raises(
                TransactionError, match=r"takes a sqlite3\.Connection or an aiosqlite connection, got str"
            ):
                await bus.publish(OrderPlaced(order_id="A1"), transaction=str(db_path))
            assert await bus.store.head() == 0
        assert other.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        other.close()
        in_memory.close()


async def test_another_path_to_the_store_file_is_accepted(db_path: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.db"
    os.symlink(db_path, link)
    async with running(db_path) as (bus, seen):
        connection = sqlite3.connect(link, isolation_level=None)
        try:
            async with bus.transaction(connection) as tx:
                await tx.publish(OrderPlaced(order_id="A1"))
        finally:
            connection.close()
        await seen.wait_for(1)


async def test_publish_middleware_runs_around_a_publish_in_a_transaction(
    db_path: Path, connection: sqlite3.Connection
) -> None:
    seen_by_middleware: list[tuple[int, int]] = []

    def stamp(call_next: Commit) -> Commit:
        async def commit(records: Sequence[Record]) -> None:
            for record in records:
                record.headers = MappingProxyType({**record.headers, "stamped": "yes"})
            await call_next(records)
            seen_by_middleware.append((len(records), records[-1].seq))

        return commit

    async with EventBus(store=SqliteStore(db_path), publish_middleware=[stamp]) as bus:
        async with bus.transaction(connection) as tx:
            await tx.publish(OrderPlaced(order_id="A1"))
            await tx.publish_many([OrderPlaced(order_id="A2"), OrderPlaced(order_id="A3")])
        await bus.publish(OrderPlaced(order_id="A4"))
        assert seen_by_middleware == [(1, 1), (2, 3), (1, 4)]
        assert [dict(record.headers) for record in await bus.store.read(1)] == [{"stamped": "yes"}] * 4


@pytest.mark.parametrize("count", [1, 3])
async def test_a_publish_that_would_leave_a_gap_in_the_seqs_rolls_the_transaction_back(
    db_path: Path, connection: sqlite3.Connection, count: int
) -> None:
    async with running(db_path) as (bus, seen):
        connection.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
        await bus.publish_many([OrderPlaced(order_id=f"A{n}") for n in range(3)])
        await seen.wait_for(3)
        # set below the greatest seq, AUTOINCREMENT's high-water mark makes the next seq skip ahead of the head
        connection.execute("UPDATE sqlite_sequence SET seq = 1 WHERE name = 'eventbus_records'")

        async def place_order() -> None:
            async with bus.transaction(connection) as tx:
                connection.execute("INSERT INTO orders (id) VALUES ('B1')")
                await tx.publish_many([OrderPlaced(order_id=f"B{n}") for n in range(count)])

        with pytest.raises(StoreError, match=f"{count} records after seq 1 got seqs up to {3 + count}"):
            await place_order()
        assert orders(connection) == []
        assert [record.event.order_id for record in await bus.store.read(1)] == ["A0", "A1", "A2"]


async def test_concurrent_transactional_and_plain_publishers_keep_one_gapless_order(
    db_path: Path, anyio_backend: str
) -> None:
    committed: set[UUID] = set()
    rolled_back: set[UUID] = set()
    rounds = 25

    async def transactional(worker: int) -> None:
        connection = sqlite3.connect(db_path, isolation_level=None)
        try:
            for _ in range(rounds):
                ids = [uuid4() for _ in range(random.randint(1, 4))]
                roll_back = random.random() < 0.3
                try:
                    async with bus.transaction(connection) as tx:
                        await tx.publish_many([OrderPlaced(order_id=f"t{worker}") for _ in ids], event_ids=ids)
                        if roll_back:
                            raise LookupError("rolled back on purpose")
                except LookupError:
                    rolled_back.update(ids)
                else:
                    committed.update(ids)
                await anyio.lowlevel.checkpoint()
        finally:
            connection.close()

    async def plain(worker: int) -> None:
        for _ in range(rounds):
            event_id = uuid4()
            await bus.publish(OrderPlaced(order_id=f"p{worker}"), event_id=event_id)
            committed.add(event_id)

    async with running(db_path) as (bus, seen):
        with anyio.fail_after(_DEADLINE):
            async with anyio.create_task_group() as group:
                for worker in range(3):
                    group.start_soon(transactional, worker)
                    group.start_soon(plain, worker)
        await seen.wait_for(len(committed))
        assert [r.seq for r in seen.records] == list(range(1, len(committed) + 1))
        assert [r.event_id for r in seen.records if r.event_id not in committed] == []
        assert {r.event_id for r in seen.records} == committed
        assert not committed & rolled_back
        assert await bus.store.head() == len(committed)


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_process_killed_around_its_commit_leaves_both_or_neither(
    db_path: Path, anyio_backend: str, when: str
) -> None:
    event_id = uuid4()
    command = [sys.executable, str(_CHILD), str(db_path), str(event_id), when, anyio_backend]
    with anyio.fail_after(_DEADLINE):
        async with await anyio.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            assert (await lines.receive_until(b"\n", 100)).decode() == "published 1"
            if when == "after":
                assert (await lines.receive_until(b"\n", 100)).decode() == "committed"
            process.send_signal(signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL
    async with running(db_path) as (bus, seen):
        connection = sqlite3.connect(db_path)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if when == "before":
                assert "orders" not in tables
                assert await bus.store.head() == 0
                assert await bus.publish(OrderPlaced(order_id="later")) == 1  # the lock went with the process
                await seen.wait_for(1)
                assert seen.records[0].event_id != event_id
            else:
                assert orders(connection) == [event_id.hex]
                await seen.wait_for(1)
                assert [(r.seq, r.event_id) for r in seen.records] == [(1, event_id)]
        finally:
            connection.close()


async def test_a_transaction_waits_for_a_projections_lock_without_stopping_the_loop(
    db_path: Path, connection: sqlite3.Connection
) -> None:
    bus = EventBus(store=SqliteStore(db_path))
    inside = anyio.Event()
    go_on = anyio.Event()

    @bus.subscribe(OrderPlaced, durable=True, name="view", from_seq=1, where=lambda e: e.order_id == "P1")
    async def project(event: OrderPlaced, tx: Transaction) -> None:
        await tx.execute("INSERT INTO orders (id) VALUES (?)", event.order_id)
        inside.set()  # the projection's transaction holds the file's write lock here
        await go_on.wait()

    async def place_order() -> None:
        async with bus.transaction(connection) as tx:
            connection.execute("INSERT INTO orders (id) VALUES ('A1')")
            await tx.publish(OrderPlaced(order_id="A1"))

    async with bus:
        connection.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
        await bus.publish(OrderPlaced(order_id="P1"))
        with anyio.fail_after(_DEADLINE):
            await inside.wait()
            async with anyio.create_task_group() as group:
                group.start_soon(place_order)
                await anyio.wait_all_tasks_blocked()  # the order waits for the lock, the loop runs on
                go_on.set()
        await bus.drain()
    assert sorted(connection.execute("SELECT id FROM orders").fetchall()) == [("A1",), ("P1",)]


async def test_a_begin_that_finds_the_file_busy_past_the_busy_timeout_fails_alone(
    db_path: Path, connection: sqlite3.Connection
) -> None:
    async with running(db_path) as (bus, _):
        connection.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
        other = sqlite3.connect(db_path, isolation_level=None)
        app = sqlite3.connect(db_path, isolation_level=None, timeout=0.2)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.sleep(0.01)

        try:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the file's lock throughout
            with anyio.fail_after(_DEADLINE):
                async with anyio.create_task_group() as group:
                    group.start_soon(tick)
                    with pytest.raises(StoreError, match="database is locked"):
                        async with bus.transaction(app):
                            raise AssertionError("the block must not run")
                    group.cancel_scope.cancel()
            assert ticks >= 5  # the loop ran on while the begin waited
            assert not app.in_transaction
            assert app.execute("PRAGMA busy_timeout").fetchone() == (200,)  # the connection's own, given back
            other.execute("ROLLBACK")
            async with bus.transaction(app) as tx:  # free now: the same connection begins at once
                app.execute("INSERT INTO orders (id) VALUES ('A1')")
                assert await tx.publish(OrderPlaced(order_id="A1")) == 1
        finally:
            app.close()
            other.close()
        assert orders(connection) == ["A1"]
