"""Publishing in a SQLAlchemy `AsyncSession`'s or `AsyncConnection`'s transaction,
on both databases: a real SQLite file (``sqlite+aiosqlite``) and the real
PostgreSQL server (``postgresql+asyncpg``).

SQLAlchemy's asyncio extension works on asyncio only: these tests run on
asyncio, except the one that shows trio gets a clear error.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import anyio
import pytest
from eventbus_postgres import PostgresStore
from eventbus_sqlite import SqliteStore
from postgres_server import POSTGRES_URL, admin_sql
from sqlalchemy import Column, MetaData, String, Table, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from eventbus import Event, EventBus, Store, TransactionError
from eventbus.testing import Collector

_DEADLINE = 30

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
"""SQLAlchemy's asyncio extension works on asyncio only."""


class OrderPlaced(Event, name="eventbus.tests.sqlalchemy.OrderPlaced"):
    order_id: str


@dataclass
class Database:
    """One of the two databases, as these tests use it.

    Attributes:
        name: ``"sqlite"`` or ``"postgres"``.
        store_url: where the bus's store lives (an eventbus store URL).
        url: SQLAlchemy's URL of the same database.
        other_url: SQLAlchemy's URL of another database on the same server (or in the same folder).
        orders: the application's own table.
    """

    name: str
    store_url: str
    url: str
    other_url: str
    orders: Table

    @property
    def insert_order(self) -> str:
        """The driver's own statement inserting an order (``tx.execute``'s placeholders are the driver's)."""
        if self.name == "sqlite":
            return "INSERT INTO orders (id) VALUES (?)"
        return f'INSERT INTO "{self.orders.schema}".orders (id) VALUES ($1)'

    def store(self) -> Store:
        return SqliteStore.from_url(self.store_url) if self.name == "sqlite" else PostgresStore(self.store_url)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "events.db"
        yield Database(
            "sqlite",
            f"sqlite:///{path}",
            f"sqlite+aiosqlite:///{path}",
            f"sqlite+aiosqlite:///{tmp_path / 'other.db'}",
            Table("orders", MetaData(), Column("id", String(20), primary_key=True)),
        )
        return
    schema = f"eventbus_test_{uuid4().hex[:16]}"
    url = POSTGRES_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
    yield Database(
        "postgres",
        f"{POSTGRES_URL}?schema={schema}&max_pool_size=4",
        url,
        url.rpartition("/")[0] + "/postgres",
        Table("orders", MetaData(schema=schema), Column("id", String(20), primary_key=True)),
    )
    admin_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@asynccontextmanager
async def running(database: Database) -> AsyncIterator[tuple[EventBus, Collector, AsyncEngine]]:
    """The bus on the database's store, a subscriber reading it from seq 1, and
    SQLAlchemy's engine on the same database (with the orders table)."""
    bus = EventBus(store=database.store())
    seen = Collector(timeout=_DEADLINE)
    bus.subscribe(OrderPlaced, seen, from_seq=1, name="seen")
    engine = create_async_engine(database.url)
    try:
        async with bus:
            async with engine.begin() as conn:
                await conn.run_sync(database.orders.metadata.create_all)
            yield bus, seen, engine
    finally:
        await engine.dispose()


async def stored_orders(engine: AsyncEngine, database: Database) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.scalars(select(database.orders.c.id).order_by(database.orders.c.id))).all())


@asyncio_only
async def test_a_session_transaction_commits_the_row_and_the_event_which_is_delivered_after(
    database: Database,
) -> None:
    async with running(database) as (bus, seen, engine), AsyncSession(engine) as session:
        async with bus.transaction(session) as tx:
            assert tx.connection is session
            await session.execute(insert(database.orders).values(id="A1"))
            assert await tx.publish(OrderPlaced(order_id="A1")) == 1
            assert await tx.publish_many([OrderPlaced(order_id="A2")]) == [2]
            assert await bus.store.read(1) == []  # nothing visible before the commit
            assert seen.records == []
        assert not session.in_transaction()  # SQLAlchemy committed it, and knows
        assert bus.head == 2
        await bus.drain(timeout=_DEADLINE)
        assert _orders(seen) == [(1, "A1"), (2, "A2")]
        assert await stored_orders(engine, database) == ["A1"]
        # the session is usable as before, and so is the bus
        async with bus.transaction(session) as tx:
            assert await tx.publish(OrderPlaced(order_id="A3")) == 3
        assert await bus.publish(OrderPlaced(order_id="B1")) == 4
        await seen.wait_for(4)
        assert [seq for seq, _ in _orders(seen)] == [1, 2, 3, 4]


@asyncio_only
async def test_a_session_transaction_that_raises_stores_and_delivers_neither_row_nor_event(
    database: Database,
) -> None:
    async with running(database) as (bus, seen, engine), AsyncSession(engine) as session:

        async def place_order() -> None:
            async with bus.transaction(session) as tx:
                await session.execute(insert(database.orders).values(id="A1"))
                assert await tx.publish(OrderPlaced(order_id="A1")) == 1
                raise LookupError("out of stock")

        with pytest.raises(LookupError, match="out of stock"):
            await place_order()
        assert not session.in_transaction()
        assert await stored_orders(engine, database) == []
        assert await bus.store.head() == 0
        # the rolled-back transaction's seq is the next one: no gap
        assert await bus.publish(OrderPlaced(order_id="B1")) == 1
        await seen.wait_for(1)
        assert _orders(seen) == [(1, "B1")]


@asyncio_only
async def test_a_session_block_cancelled_before_its_end_still_commits_or_rolls_back_whole(
    database: Database,
) -> None:
    async with running(database) as (bus, seen, engine), AsyncSession(engine) as session:
        with anyio.CancelScope() as scope:
            async with bus.transaction(session) as tx:
                await session.execute(insert(database.orders).values(id="A1"))
                await tx.publish(OrderPlaced(order_id="A1"))
                scope.cancel()  # delivered at the commit's first await, which runs to its end all the same
        assert not session.in_transaction()
        assert await stored_orders(engine, database) == ["A1"]
        with anyio.CancelScope() as scope:
            async with bus.transaction(session) as tx:
                await session.execute(insert(database.orders).values(id="A2"))
                await tx.publish(OrderPlaced(order_id="A2"))
                scope.cancel()
                await anyio.lowlevel.checkpoint()  # the block ends with the cancellation: rolled back, whole
        assert scope.cancelled_caught
        assert not session.in_transaction()
        assert await stored_orders(engine, database) == ["A1"]
        assert await bus.publish(OrderPlaced(order_id="B1")) == 2  # the store's lock was given back, with no gap
        await seen.wait_for(2)
        assert _orders(seen) == [(1, "A1"), (2, "B1")]


@asyncio_only
async def test_a_commit_the_database_refuses_stores_neither_and_leaves_the_session_ready(
    database: Database,
) -> None:
    class Base(DeclarativeBase):
        metadata = database.orders.metadata

    class Order(Base):
        __table__ = database.orders

    async with running(database) as (bus, seen, engine), AsyncSession(engine) as session:
        async with bus.transaction(session) as tx:
            session.add(Order(id="A1"))
            assert await tx.publish(OrderPlaced(order_id="A1")) == 1

        async def place_again() -> None:
            async with bus.transaction(session) as tx:
                assert await tx.publish(OrderPlaced(order_id="A1 again")) == 2
                session.add(Order(id="A1"))  # flushed by the commit, and refused

        with pytest.raises(IntegrityError):  # SQLAlchemy's own error, unchanged
            await place_again()
        assert not session.in_transaction()  # rolled back, as session.begin() does
        assert await bus.store.head() == 1
        assert bus.head == 1
        session.expunge_all()
        async with bus.transaction(session) as tx:
            session.add(Order(id="A2"))
            assert await tx.publish(OrderPlaced(order_id="A2")) == 2
        await bus.drain(timeout=_DEADLINE)
        assert _orders(seen) == [(1, "A1"), (2, "A2")]
        assert await stored_orders(engine, database) == ["A1", "A2"]


@asyncio_only
async def test_tx_execute_runs_in_the_sessions_transaction(database: Database) -> None:
    async with running(database) as (bus, seen, engine), AsyncSession(engine) as session:

        async def place_order(order_id: str, *, fail: bool) -> None:
            async with bus.transaction(session) as tx:
                await tx.execute(database.insert_order, order_id)  # the block's first statement
                await tx.publish(OrderPlaced(order_id=order_id))
                if fail:
                    raise LookupError("out of stock")

        with pytest.raises(LookupError, match="out of stock"):
            await place_order("A1", fail=True)
        assert await stored_orders(engine, database) == []  # rolled back with the transaction
        await place_order("A2", fail=False)
        await bus.drain(timeout=_DEADLINE)
        assert _orders(seen) == [(1, "A2")]
        assert await stored_orders(engine, database) == ["A2"]


@asyncio_only
async def test_publish_joins_the_transaction_a_session_began(database: Database) -> None:
    async with running(database) as (bus, seen, engine), AsyncSession(engine) as session:
        async with session.begin():
            await session.execute(insert(database.orders).values(id="A1"))
            assert await bus.publish(OrderPlaced(order_id="A1"), transaction=session) == 1

        async def place_order() -> None:
            async with session.begin():
                await session.execute(insert(database.orders).values(id="A2"))
                assert await bus.publish_many([OrderPlaced(order_id="A2")], transaction=session) == [2]
                raise LookupError("out of stock")

        with pytest.raises(LookupError, match="out of stock"):
            await place_order()
        # a transaction SQLAlchemy began by itself (autobegin) with the session's first statement
        await session.execute(insert(database.orders).values(id="A3"))
        assert await bus.publish(OrderPlaced(order_id="A3"), transaction=session) == 2
        await session.commit()
        await seen.wait_for(2)
        assert _orders(seen) == [(1, "A1"), (2, "A3")]
        assert await stored_orders(engine, database) == ["A1", "A3"]
        assert await bus.store.head() == 2


@asyncio_only
async def test_an_async_connection_commits_both_or_rolls_both_back(database: Database) -> None:
    async with running(database) as (bus, seen, engine), engine.connect() as conn:
        async with bus.transaction(conn) as tx:
            assert tx.connection is conn
            await conn.execute(insert(database.orders).values(id="A1"))
            assert await tx.publish(OrderPlaced(order_id="A1")) == 1
        assert not conn.in_transaction()

        async def place_order() -> None:
            async with conn.begin():
                await conn.execute(insert(database.orders).values(id="A2"))
                assert await bus.publish(OrderPlaced(order_id="A2"), transaction=conn) == 2
                raise LookupError("out of stock")

        with pytest.raises(LookupError, match="out of stock"):
            await place_order()
        async with conn.begin():  # the event published before the row is written
            assert await bus.publish(OrderPlaced(order_id="A3"), transaction=conn) == 2
            await conn.execute(insert(database.orders).values(id="A3"))
        await seen.wait_for(2)
        assert _orders(seen) == [(1, "A1"), (2, "A3")]
        assert await stored_orders(engine, database) == ["A1", "A3"]


@asyncio_only
async def test_a_plain_publish_inside_an_open_transaction_is_refused_not_deadlocked(database: Database) -> None:
    async with running(database) as (bus, seen, engine), AsyncSession(engine) as session:
        async with bus.transaction(session) as tx:
            await tx.publish(OrderPlaced(order_id="A1"))
            with anyio.fail_after(_DEADLINE), pytest.raises(TransactionError, match="would wait forever"):
                await bus.publish(OrderPlaced(order_id="B1"))
        assert await bus.publish(OrderPlaced(order_id="B1")) == 2
        await seen.wait_for(2)
        assert _orders(seen) == [(1, "A1"), (2, "B1")]


@asyncio_only
async def test_a_plain_publish_before_the_transaction_wrote_goes_through(database: Database) -> None:
    # SQLAlchemy's drivers begin the database transaction lazily: until the
    # block writes, it holds no lock, and a plain publish does not wait
    async with running(database) as (bus, seen, engine), AsyncSession(engine) as session:
        async with bus.transaction(session) as tx:
            with anyio.fail_after(_DEADLINE):
                assert await bus.publish(OrderPlaced(order_id="B1")) == 1
            await session.execute(insert(database.orders).values(id="A1"))
            assert await tx.publish(OrderPlaced(order_id="A1")) == 2
            with anyio.fail_after(_DEADLINE), pytest.raises(TransactionError, match="would wait forever"):
                await bus.publish(OrderPlaced(order_id="B2"))
        assert bus.head == 2  # the block's event counts: drain() waits for it
        await bus.drain(timeout=_DEADLINE)
        assert _orders(seen) == [(1, "B1"), (2, "A1")]


@asyncio_only
async def test_concurrent_sessions_and_plain_publishers_give_gapless_seqs_and_every_commit_once(
    database: Database,
) -> None:
    rolls = random.Random(22)
    plan = {(worker, n): rolls.random() < 0.3 for worker in range(4) for n in range(10)}  # True: roll back
    async with running(database) as (bus, seen, engine):

        async def transactional(worker: int) -> None:
            async with AsyncSession(engine) as session:
                for n in range(10):
                    order_id = f"T{worker}-{n}"
                    try:
                        async with bus.transaction(session) as tx:
                            await session.execute(insert(database.orders).values(id=order_id))
                            await tx.publish(OrderPlaced(order_id=order_id))
                            if plan[worker, n]:
                                raise LookupError(order_id)
                    except LookupError:
                        pass

        async def plain(worker: int) -> None:
            for n in range(10):
                await bus.publish(OrderPlaced(order_id=f"P{worker}-{n}"))

        with anyio.fail_after(_DEADLINE):
            async with anyio.create_task_group() as tg:
                for worker in range(4):
                    tg.start_soon(transactional, worker)
                for worker in range(2):
                    tg.start_soon(plain, worker)
        committed = sorted(f"T{w}-{n}" for (w, n), rolled_back in plan.items() if not rolled_back)
        expected = sorted([*committed, *(f"P{w}-{n}" for w in range(2) for n in range(10))])
        await seen.wait_for(len(expected))
        assert [seq for seq, _ in _orders(seen)] == list(range(1, len(expected) + 1))  # gapless, in order
        assert sorted(order_id for _, order_id in _orders(seen)) == expected  # every commit, once
        assert await stored_orders(engine, database) == committed
        assert await bus.store.head() == len(expected)


@asyncio_only
async def test_what_has_no_transaction_or_already_has_one_is_refused(database: Database) -> None:
    async with running(database) as (bus, _, engine):
        async with AsyncSession(engine) as session:
            with pytest.raises(TransactionError, match="no transaction is open on"):
                await bus.publish(OrderPlaced(order_id="A1"), transaction=session)
            async with session.begin():
                with pytest.raises(TransactionError, match="a transaction is already open on"):
                    async with bus.transaction(session):
                        raise AssertionError("the block must not run")
        async with engine.connect() as conn:
            with pytest.raises(TransactionError, match="no transaction is open on"):
                await bus.publish_many([OrderPlaced(order_id="A1")], transaction=conn)
        with pytest.raises(TransactionError, match=r"takes an AsyncSession or an AsyncConnection .*, got AsyncEngine"):
            await bus.publish(OrderPlaced(order_id="A1"), transaction=engine)
        with pytest.raises(TransactionError, match=r"takes an AsyncSession or an AsyncConnection .*, got Engine"):
            async with bus.transaction(engine.sync_engine):
                raise AssertionError("the block must not run")
        assert await bus.store.head() == 0


@asyncio_only
async def test_another_database_is_refused_before_anything_is_written(database: Database) -> None:
    other = create_async_engine(database.other_url)
    try:
        async with running(database) as (bus, seen, _), AsyncSession(other) as session:
            with pytest.raises(TransactionError, match="cannot publish in a transaction through this connection"):
                async with bus.transaction(session):
                    raise AssertionError("the block must not run")
            assert not session.in_transaction()  # what was begun is rolled back
            async with other.connect() as conn:
                with pytest.raises(TransactionError, match="cannot publish in a transaction through this connection"):
                    async with bus.transaction(conn):
                        raise AssertionError("the block must not run")
                assert not conn.in_transaction()
                async with conn.begin():
                    with pytest.raises(TransactionError, match="cannot publish in a transaction through this"):
                        await bus.publish(OrderPlaced(order_id="A1"), transaction=conn)
            assert await bus.store.head() == 0
            assert await bus.publish(OrderPlaced(order_id="B1")) == 1
            await seen.wait_for(1)
            assert _orders(seen) == [(1, "B1")]
        async with other.connect() as conn:
            query = (
                "SELECT name FROM sqlite_master"
                if database.name == "sqlite"
                else "SELECT relname FROM pg_class WHERE relname IN ('records', 'seq_counter')"
            )
            assert (await conn.execute(text(query))).all() == []
    finally:
        await other.dispose()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_gets_a_clear_error_and_nothing_is_written(database: Database) -> None:
    # creating an engine, a session or a connection object does no I/O; using one would need asyncio
    engine = create_async_engine(database.url)
    async with EventBus(store=database.store()) as bus:
        for connection in (AsyncSession(engine), AsyncConnection(engine)):
            with pytest.raises(TransactionError, match="works on asyncio only, and this task does not run on asyncio"):
                await bus.publish(OrderPlaced(order_id="A1"), transaction=connection)
            with pytest.raises(TransactionError, match="works on asyncio only"):
                async with bus.transaction(connection):
                    raise AssertionError("the block must not run")
        assert await bus.store.head() == 0
        assert await bus.publish(OrderPlaced(order_id="B1")) == 1


def test_importing_eventbus_and_its_stores_does_not_import_sqlalchemy() -> None:
    probe = (
        "import sys, eventbus, eventbus_sqlite, eventbus_postgres\n"
        "loaded = sorted(name for name in ('sqlalchemy', 'aiosqlite', 'eventbus._sqlalchemy') if name in sys.modules)\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def _orders(seen: Collector) -> list[tuple[int, str]]:
    """The seq and order id of each delivered `OrderPlaced`."""
    return [(record.seq, record.event.order_id) for record in seen.records]
