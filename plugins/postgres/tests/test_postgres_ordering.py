"""Seqs follow commit order: concurrent appenders on separate connections never let a reader skip."""

from __future__ import annotations

from collections import defaultdict

import anyio
from eventbus_postgres import PostgresStore
from postgres_events import Tick, tick_records
from postgres_helpers import store_url

from eventbus.record import Record

_STORES = 2
_TASKS_PER_STORE = 3
_BATCHES_PER_TASK = 25


def _size(writer: int, batch: int) -> int:
    return 1 + (writer * 13 + batch * 7) % 60


async def test_a_tailing_reader_never_sees_a_gap_while_two_stores_append(schema: str) -> None:
    writers = [PostgresStore(store_url(schema)) for _ in range(_STORES)]
    reader = PostgresStore(store_url(schema))
    for store in (*writers, reader):
        await store.open()
    appended: list[Record] = []
    tailed: list[Record] = []
    writing_done = anyio.Event()

    async def write(store: PostgresStore, writer: int) -> None:
        for batch in range(_BATCHES_PER_TASK):
            records = tick_records(writer, batch * 100, _size(writer, batch), batch=batch)
            await store.append(records)
            appended.extend(records)

    async def tail() -> None:
        """Read as fast as possible from the next expected seq; a gap would show up as a skip."""
        next_seq = 1
        while not writing_done.is_set() or next_seq <= await reader.head():
            page = await reader.read(next_seq, limit=500)
            if page:
                seqs = [record.seq for record in page]
                skipped = sorted(set(range(next_seq, seqs[-1] + 1)) - set(seqs))
                assert not skipped, f"the reader skipped seqs {skipped[:5]} (reading from {next_seq})"
                tailed.extend(page)
                next_seq = seqs[-1] + 1
            else:
                await anyio.lowlevel.checkpoint()

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as outer:
                outer.start_soon(tail)
                async with anyio.create_task_group() as group:
                    for index, store in enumerate(writers):
                        for task in range(_TASKS_PER_STORE):
                            group.start_soon(write, store, index * _TASKS_PER_STORE + task)
                writing_done.set()
    finally:
        for store in (*writers, reader):
            await store.close()

    total = sum(
        _size(writer, batch) for writer in range(_STORES * _TASKS_PER_STORE) for batch in range(_BATCHES_PER_TASK)
    )
    assert len(appended) == total
    assert [record.seq for record in tailed] == list(range(1, total + 1))
    assert sorted(record.seq for record in appended) == [record.seq for record in tailed]
    by_seq = {record.seq: record.event_id for record in appended}
    assert [by_seq[record.seq] for record in tailed] == [record.event_id for record in tailed]

    batches: dict[tuple[int, int], list[int]] = defaultdict(list)
    for record in tailed:
        event = record.event
        assert isinstance(event, Tick)
        batches[event.writer, event.batch].append(record.seq)
    for (writer, batch), seqs in batches.items():
        assert len(seqs) == _size(writer, batch)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"batch {batch} of writer {writer} interleaved"
