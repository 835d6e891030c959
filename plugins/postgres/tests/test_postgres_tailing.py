"""Tailing the store live from another store instance, another bus and another process (LISTEN/NOTIFY)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from eventbus_postgres import PostgresStore
from postgres_events import Tick, tick_records
from postgres_helpers import admin_sql, store_url
from postgres_process import child, read_line

from eventbus import EventBus
from eventbus.record import Record

_BATCHES = 20
_BATCH_SIZE = 25


@pytest.fixture
async def store(schema: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(store_url(schema))
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def peer(schema: str, store: PostgresStore) -> AsyncIterator[PostgresStore]:
    """A second instance on the same schema, standing in for another process."""
    peer = PostgresStore(store_url(schema))
    await peer.open()
    yield peer
    await peer.close()


async def tail(store: PostgresStore, until_seq: int, into: list[Record]) -> None:
    """Read from where ``into`` ends, then wait for appends, until ``until_seq`` is read."""
    while not into or into[-1].seq < until_seq:
        after = into[-1].seq if into else 0
        page = await store.read(after + 1)
        if page:
            into.extend(page)
        else:
            await store.wait_for_append(after)


async def listener_pids(schema: str) -> list[int]:
    rows = await anyio.to_thread.run_sync(
        admin_sql,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'eventbus-postgres (listen)' AND query LIKE $1",
        f'%"{schema}".seq_counter%',
    )
    return [row[0] for row in rows]


async def test_a_store_tails_another_stores_appends(store: PostgresStore, peer: PostgresStore) -> None:
    seen: list[Record] = []
    appended: list[Record] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(tail, store, _BATCHES * _BATCH_SIZE, seen)
            for batch in range(_BATCHES):
                records = tick_records(1, batch * _BATCH_SIZE, _BATCH_SIZE, batch=batch)
                await peer.append(records)
                appended.extend(records)
    assert [record.seq for record in seen] == list(range(1, _BATCHES * _BATCH_SIZE + 1))
    assert [record.event_id for record in seen] == [record.event_id for record in appended]


async def test_waiting_returns_at_once_for_what_was_committed_before(store: PostgresStore, peer: PostgresStore) -> None:
    await peer.append(tick_records(0, 0, 3))
    with anyio.fail_after(5):
        await store.wait_for_append(0)
        await store.wait_for_append(2)


async def test_waiting_lasts_until_an_append(store: PostgresStore, peer: PostgresStore) -> None:
    await peer.append(tick_records(0, 0, 3))
    with anyio.move_on_after(0.3):
        await store.wait_for_append(3)
        pytest.fail("wait_for_append(3) returned while the head was 3")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(store.wait_for_append, 3)
            await peer.append(tick_records(0, 3, 1))


async def test_tailing_survives_losing_the_listening_connection(
    store: PostgresStore, peer: PostgresStore, schema: str
) -> None:
    await peer.append(tick_records(0, 0, 2))
    seen: list[Record] = []
    with anyio.fail_after(20):
        await tail(store, 2, seen)
        await store.wait_for_append(1)
        (lost,) = await listener_pids(schema)
        async with anyio.create_task_group() as group:
            group.start_soon(tail, store, 5, seen)
            await wait_all_tasks_blocked()
            await anyio.to_thread.run_sync(admin_sql, "SELECT pg_terminate_backend($1)", lost)
            while not set(await listener_pids(schema)) - {lost}:
                pass  # the waiter returns early, reads nothing new, and listens again
            await peer.append(tick_records(0, 2, 3))
    assert [record.event for record in seen] == [Tick(n=n) for n in range(5)]
    assert lost not in await listener_pids(schema)


async def test_a_store_tails_another_process(store: PostgresStore, schema: str, anyio_backend: str) -> None:
    total = _BATCHES * _BATCH_SIZE
    seen: list[Record] = []
    with anyio.fail_after(30):
        async with child("store", anyio_backend, store_url(schema), str(_BATCH_SIZE), str(_BATCHES)) as (
            process,
            stdout,
        ):
            async with anyio.create_task_group() as group:
                group.start_soon(tail, store, total, seen)
                acknowledged = [await read_line(stdout) for _ in range(_BATCHES)]
            assert await process.wait() == 0
    assert acknowledged[-1] == f"ack {total - _BATCH_SIZE + 1} {total}"
    assert [record.seq for record in seen] == list(range(1, total + 1))
    assert [record.event for record in seen] == [Tick(batch=n // _BATCH_SIZE, n=n) for n in range(total)]


async def test_a_second_bus_tails_the_first_live_through_a_from_seq_subscription(schema: str) -> None:
    url = store_url(schema)
    seen: list[Record] = []
    got_all = anyio.Event()
    total = _BATCHES * _BATCH_SIZE

    def follow(event: Tick, record: Record) -> None:
        seen.append(record)
        if len(seen) == total:
            got_all.set()

    follower = EventBus(store=url)
    follower.subscribe(Tick, follow, from_seq=1, name="follower")
    with anyio.fail_after(30):
        async with EventBus(store=url) as publisher, follower:
            for batch in range(_BATCHES):
                first = batch * _BATCH_SIZE
                await publisher.publish_many(Tick(batch=batch, n=n) for n in range(first, first + _BATCH_SIZE))
            await got_all.wait()
            assert follower.head == 0, "the follower published nothing; it saw the events through the store"
    assert [record.seq for record in seen] == list(range(1, total + 1))
    assert [record.event for record in seen] == [Tick(batch=n // _BATCH_SIZE, n=n) for n in range(total)]
