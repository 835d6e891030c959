"""Publishing in the application's own PostgreSQL transaction (the outbox), on the real server.

The application's connection is an asyncpg one, which works on asyncio only:
these tests run on asyncio, except the one that shows trio gets a clear error."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio
import asyncpg
import postgres_tx_child
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from eventbus_postgres import PostgresStore
from postgres_events import Tick
from postgres_helpers import POSTGRES_URL, admin_sql, store_url

from eventbus import EventBus, StoreError, TransactionError
from eventbus.testing import Collector

_CHILD = Path(postgres_tx_child.__file__)
_DEADLINE = 30

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
"""An application's asyncpg connection lives on an asyncio loop."""


@asynccontextmanager
async def running(schema: str) -> AsyncIterator[tuple[EventBus, Collector]]:
    bus = EventBus(store=PostgresStore(store_url(schema)))
    seen = Collector(timeout=_DEADLINE)
    bus.subscribe(Tick, seen, from_seq=1, name="seen")
    async with bus:
        await bus.store.head()
        admin_sql(f'CREATE TABLE IF NOT EXISTS "{schema}".orders (id uuid PRIMARY KEY)')
        yield bus, seen


@asynccontextmanager
async def connected(url: str = POSTGRES_URL) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def orders(conn: Any, schema: str) -> list[UUID]:
    return [row[0] for row in await conn.fetch(f'SELECT id FROM "{schema}".orders ORDER BY id')]


@asyncio_only
async def test_publish_joins_a_transaction_the_application_began_itself(schema: str) -> None:
    async with running(schema) as (bus, seen), connected() as conn:
        async with conn.transaction():
            await conn.execute(f'INSERT INTO "{schema}".orders (id) VALUES ($1)', uuid4())
            assert await bus.publish(Tick(n=1), transaction=conn) == 1
            assert await bus.publish_many([Tick(n=2)], transaction=conn) == [2]
        transaction = conn.transaction()
        await transaction.start()
        await bus.publish(Tick(n=3), transaction=conn)
        await transaction.rollback()
        assert await bus.publish(Tick(n=4)) == 3
        await seen.wait_for(3)
        assert [r.event.n for r in seen.records] == [1, 2, 4]


@asyncio_only
async def test_nested_transactions_of_the_application_become_savepoints(schema: str) -> None:
    async with running(schema) as (bus, seen), connected() as conn:
        async with bus.transaction(conn) as tx:
            await tx.publish(Tick(n=1))
            async with conn.transaction():  # a savepoint inside bus.transaction
                await conn.execute(f'INSERT INTO "{schema}".orders (id) VALUES ($1)', uuid4())
        await seen.wait_for(1)
        assert len(await orders(conn, schema)) == 1


@asyncio_only
async def test_a_connection_to_another_database_is_refused_before_anything_is_written(schema: str) -> None:
    other_database = POSTGRES_URL.rsplit("/", 1)[0] + "/postgres"
    async with running(schema) as (bus, _), connected(other_database) as other:
        async with other.transaction():
            with pytest.raises(TransactionError, match="connected to database 'postgres', and the store lives in"):
                await bus.publish(Tick(n=1), transaction=other)
        with pytest.raises(TransactionError, match="connected to database 'postgres'"):
            async with bus.transaction(other):
                raise AssertionError("the block must not run")
        assert not other.is_in_transaction()
        with pytest.raises(TransactionError, match="takes an asyncpg connection, got str"):
            await bus.publish(Tick(n=1), transaction=other_database)
        assert await bus.store.head() == 0


@asyncio_only
async def test_a_pooled_connection_is_accepted(schema: str) -> None:
    async with running(schema) as (bus, seen), asyncpg.create_pool(POSTGRES_URL, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn, bus.transaction(conn) as tx:
            await tx.publish(Tick(n=1))
        await seen.wait_for(1)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_gets_a_clear_error_for_an_asyncpg_connection(schema: str) -> None:
    loop = asyncio.new_event_loop()  # where the connection lives, driven from a worker thread
    conn = await anyio.to_thread.run_sync(loop.run_until_complete, asyncpg.connect(POSTGRES_URL))
    try:
        async with running(schema) as (bus, _):
            with pytest.raises(TransactionError, match="works on asyncio only, and this task runs on trio"):
                async with bus.transaction(conn):
                    raise AssertionError("the block must not run")
            assert await bus.store.head() == 0
    finally:
        await anyio.to_thread.run_sync(loop.run_until_complete, conn.close())
        loop.close()


async def waiting_for_a_lock(conn: Any, watcher: Any) -> None:
    """Until the server says ``conn``'s session waits for a lock: polled, as
    the server tells no one when a session starts waiting."""
    query = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"
    with anyio.fail_after(_DEADLINE):
        while not await watcher.fetchval(query, conn.get_server_pid()):  # noqa: ASYNC110
            await anyio.sleep(0.01)


@asyncio_only
async def test_an_id_another_transaction_commits_while_this_one_waits_for_the_lock_is_looked_up(schema: str) -> None:
    # the waiting append's statement began before the other transaction
    # committed, so what it saw then cannot tell whether the id is stored: it
    # must look again once it holds the lock, and never fail the application's transaction
    shared = uuid4()
    answers: list[int] = []
    async with running(schema) as (bus, seen), connected() as first, connected() as second, connected() as watcher:

        async def second_transaction() -> None:
            async with second.transaction():
                await second.execute(f'INSERT INTO "{schema}".orders (id) VALUES ($1)', shared)
                answers.append(await bus.publish(Tick(n=0), event_id=shared, transaction=second))

        with anyio.fail_after(_DEADLINE):
            async with anyio.create_task_group() as group, bus.transaction(first) as tx:
                assert await tx.publish(Tick(n=1), event_id=shared) == 1
                group.start_soon(second_transaction)
                await waiting_for_a_lock(second, watcher)
                assert await tx.publish(Tick(n=2)) == 2
        assert answers == [1], "the stored seq, nothing inserted"
        assert await orders(second, schema) == [shared], "the application's transaction committed"
        await seen.wait_for(2)
        assert [(r.seq, r.event.n) for r in seen.records] == [(1, 1), (2, 2)]
        assert await bus.store.head() == 2


@asyncio_only
async def test_a_connection_is_checked_once_for_as_long_as_it_lives(schema: str) -> None:
    identity_reads: list[str] = []

    def log(query: Any) -> None:
        if "current_database()" in query.query:
            identity_reads.append(query.query)

    async with running(schema) as (bus, seen), asyncpg.create_pool(POSTGRES_URL, min_size=1, max_size=1) as pool:
        for n in (1, 2):  # a new proxy of the pool's one connection each time
            async with pool.acquire() as conn:
                conn.add_query_logger(log)
                async with bus.transaction(conn) as tx:
                    await tx.publish(Tick(n=n))
                conn.remove_query_logger(log)
        assert len(identity_reads) == 1
        async with connected() as conn:
            conn.add_query_logger(log)
            async with conn.transaction():
                await bus.publish(Tick(n=3), transaction=conn)
        assert len(identity_reads) == 2, "another connection is checked again"
        await seen.wait_for(3)


@asyncio_only
async def test_concurrent_transactional_and_plain_publishers_keep_one_gapless_order(schema: str) -> None:
    committed: set[UUID] = set()
    rolled_back: set[UUID] = set()
    rounds = 20

    async def transactional(worker: int) -> None:
        async with connected() as conn:
            for _ in range(rounds):
                ids = [uuid4() for _ in range(random.randint(1, 4))]
                roll_back = random.random() < 0.3
                try:
                    async with bus.transaction(conn) as tx:
                        for event_id in ids:
                            await tx.publish(Tick(writer=worker, n=0), event_id=event_id)
                            await anyio.lowlevel.checkpoint()  # let the others run while the lock is held
                        if roll_back:
                            raise LookupError("rolled back on purpose")
                except LookupError:
                    rolled_back.update(ids)
                else:
                    committed.update(ids)

    async def plain(worker: int) -> None:
        for _ in range(rounds):
            event_id = uuid4()
            await bus.publish(Tick(writer=100 + worker, n=0), event_id=event_id)
            committed.add(event_id)

    async with running(schema) as (bus, seen):
        with anyio.fail_after(_DEADLINE):
            async with anyio.create_task_group() as group:
                for worker in range(3):
                    group.start_soon(transactional, worker)
                    group.start_soon(plain, worker)
        await seen.wait_for(len(committed))
        assert [r.seq for r in seen.records] == list(range(1, len(committed) + 1))
        assert {r.event_id for r in seen.records} == committed
        assert len(seen.records) == len(committed)
        assert not committed & rolled_back
        assert await bus.store.head() == len(committed)


@asyncio_only
@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_process_killed_around_its_commit_leaves_both_or_neither(schema: str, when: str) -> None:
    event_id = uuid4()
    async with running(schema) as (bus, seen), connected() as conn:
        command = [sys.executable, str(_CHILD), store_url(schema), schema, str(event_id), when]
        with anyio.fail_after(_DEADLINE):
            async with await anyio.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
                assert process.stdout is not None
                lines = BufferedByteReceiveStream(process.stdout)
                assert (await lines.receive_until(b"\n", 100)).decode() == "published 1"
                if when == "after":
                    assert (await lines.receive_until(b"\n", 100)).decode() == "committed"
                process.send_signal(signal.SIGKILL)
                assert await process.wait() == -signal.SIGKILL
        if when == "before":
            # the server ends the killed session and rolls its transaction back, freeing the lock
            assert await bus.publish(Tick(n=2)) == 1
            await seen.wait_for(1)
            assert seen.records[0].event_id != event_id
            assert await orders(conn, schema) == []
        else:
            await seen.wait_for(1)
            assert [(r.seq, r.event_id) for r in seen.records] == [(1, event_id)]
            assert await orders(conn, schema) == [event_id]


@asyncio_only
async def test_a_plain_publish_the_bus_cannot_tie_to_the_transaction_fails_after_lock_timeout(schema: str) -> None:
    bus = EventBus(store=PostgresStore(store_url(schema), lock_timeout=0.5))
    go, refused = anyio.Event(), anyio.Event()

    async def publish_plainly() -> None:
        # started before the transaction began: nothing ties this task to it
        await go.wait()
        with pytest.raises(StoreError, match=r"waited lock_timeout=0\.5s for the seq counter's lock"):
            await bus.publish(Tick(n=0))
        refused.set()

    async with bus, connected() as conn, anyio.create_task_group() as group:
        group.start_soon(publish_plainly)
        async with bus.transaction(conn) as tx:
            await tx.publish(Tick(n=1))
            go.set()
            with anyio.fail_after(_DEADLINE):
                await refused.wait()  # the transaction waits for the plain publish, which waits for it
        assert await bus.store.head() == 1
        assert await bus.publish(Tick(n=2)) == 2
