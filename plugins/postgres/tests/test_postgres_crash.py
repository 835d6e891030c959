"""kill -9 a process that appends as fast as it can: every acknowledged event survives, whole,
and a restarted durable subscription resumes where the killed one stopped."""

from __future__ import annotations

import random
import signal

import anyio
from eventbus_postgres import PostgresStore
from postgres_child import AUDIT
from postgres_events import Tick
from postgres_helpers import store_url
from postgres_process import child, read_line

from eventbus import EventBus, Record

_BATCH_SIZE = 50


async def _read_everything(store: PostgresStore) -> list[Record]:
    records: list[Record] = []
    while page := await store.read(records[-1].seq + 1 if records else 1):
        records.extend(page)
    return records


async def _survivors(schema: str) -> tuple[int, list[Record], int | None]:
    """The head, every record, and the ``audit`` checkpoint, read by a fresh store."""
    store = PostgresStore(store_url(schema))
    await store.open()
    try:
        return await store.head(), await _read_everything(store), await store.load_checkpoint(AUDIT)
    finally:
        await store.close()


def _assert_whole_and_gapless(head: int, records: list[Record], acknowledged: list[tuple[int, int]]) -> None:
    assert head >= acknowledged[-1][1], f"acknowledged up to {acknowledged[-1][1]}, stored up to {head}"
    assert head % _BATCH_SIZE == 0, f"a batch was torn: the head is {head}"
    assert [record.seq for record in records] == list(range(1, head + 1))
    assert [record.event for record in records] == [Tick(batch=n // _BATCH_SIZE, n=n) for n in range(head)]


async def test_every_acknowledged_append_survives_kill_9(schema: str, anyio_backend: str) -> None:
    kill_after = random.randint(5, 80)
    acknowledged: list[tuple[int, int]] = []
    with anyio.fail_after(30):
        async with child("store", anyio_backend, store_url(schema), str(_BATCH_SIZE)) as (process, stdout):
            while len(acknowledged) < kill_after:
                _, first, last = (await read_line(stdout)).split()
                acknowledged.append((int(first), int(last)))
            process.send_signal(signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL

    assert acknowledged == [(batch * _BATCH_SIZE + 1, (batch + 1) * _BATCH_SIZE) for batch in range(kill_after)]
    head, records, _ = await _survivors(schema)
    _assert_whole_and_gapless(head, records, acknowledged)


async def test_a_durable_subscription_resumes_after_kill_9(schema: str, anyio_backend: str) -> None:
    kill_after = random.randint(5, 40)
    acknowledged: list[tuple[int, int]] = []
    handled_before: list[int] = []
    enough = anyio.Event()

    with anyio.fail_after(30):
        async with child("bus", anyio_backend, store_url(schema), str(_BATCH_SIZE)) as (process, stdout):

            async def follow() -> None:
                """Keep reading what the child prints (a full pipe would stall it) until it dies."""
                while True:
                    try:
                        line = await read_line(stdout)
                    except anyio.IncompleteRead:
                        return
                    kind, *seqs = line.split()
                    if kind == "ack":
                        acknowledged.append((int(seqs[0]), int(seqs[1])))
                    else:
                        handled_before.append(int(seqs[0]))
                    if len(acknowledged) >= kill_after and handled_before:
                        enough.set()

            async with anyio.create_task_group() as group:
                group.start_soon(follow)
                await enough.wait()
                watcher = PostgresStore(store_url(schema))
                await watcher.open()
                try:
                    while await watcher.load_checkpoint(AUDIT) is None:
                        await watcher.wait_for_append(await watcher.head())
                finally:
                    await watcher.close()
                process.send_signal(signal.SIGKILL)
                assert await process.wait() == -signal.SIGKILL
                group.cancel_scope.cancel()

    head, records, checkpoint = await _survivors(schema)
    _assert_whole_and_gapless(head, records, acknowledged)
    assert checkpoint is not None
    assert checkpoint <= max(handled_before), "the checkpoint ran ahead of what was handled"
    assert handled_before == list(range(1, len(handled_before) + 1))

    handled_after: list[Record] = []
    caught_up = anyio.Event()

    def audit(event: Tick, record: Record) -> None:
        handled_after.append(record)
        if record.seq == head + 1:
            caught_up.set()

    bus = EventBus(store=store_url(schema))
    bus.subscribe(Tick, audit, durable=True, from_seq=1, name=AUDIT)
    with anyio.fail_after(30):
        async with bus:
            # one tick past the head: handled once the killed process's lease has run
            # out and everything before it was, even when its checkpoint was at the head
            await bus.publish(Tick(batch=head // _BATCH_SIZE, n=head))
            await caught_up.wait()
    assert [record.seq for record in handled_after] == list(range(checkpoint + 1, head + 2))
    assert [record.event for record in handled_after[:-1]] == [record.event for record in records[checkpoint:]]
    assert set(handled_before) | {record.seq for record in handled_after} == set(range(1, head + 2))
