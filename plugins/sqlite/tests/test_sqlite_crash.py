"""Real processes, killed with SIGKILL: every acknowledged append is on disk, the file is sound,
and a durable subscription resumes where the killed process left it."""

from __future__ import annotations

import random
import signal
import sqlite3
import sys
from contextlib import suppress
from pathlib import Path
from uuid import UUID

import anyio
import pytest
import sqlite_appender
import sqlite_publisher
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from eventbus_sqlite import SqliteStore

from eventbus import EventBus, Record

_APPENDER = Path(sqlite_appender.__file__)
_PUBLISHER = Path(sqlite_publisher.__file__)
_MAX_LINE = 100
_DEADLINE = 60


async def _start_appender(path: Path, *, writers: int, limit: int, backend: str) -> Process:
    return await anyio.open_process(
        [sys.executable, str(_APPENDER), str(path), str(writers), str(limit), backend],
        stdin=None,
        stderr=None,
    )


async def _next_ack(acks: BufferedByteReceiveStream) -> tuple[int, UUID] | None:
    """The next acknowledged (seq, event id), or None at the end of the output."""
    try:
        line = await acks.receive_until(b"\n", _MAX_LINE)
    except (anyio.IncompleteRead, anyio.EndOfStream):
        return None
    seq, event_id = line.split()
    return int(seq), UUID(hex=event_id.decode())


async def _all_acks(acks: BufferedByteReceiveStream) -> dict[int, UUID]:
    acknowledged: dict[int, UUID] = {}
    while (ack := await _next_ack(acks)) is not None:
        acknowledged[ack[0]] = ack[1]
    return acknowledged


async def _stored(path: Path) -> list[Record]:
    store = SqliteStore(path)
    await store.open()
    try:
        head = await store.head()
        return list(await store.read(limit=max(head, 1)))
    finally:
        await store.close()


def _assert_sound(path: Path, records: list[Record], acknowledged: dict[int, UUID]) -> None:
    assert [record.seq for record in records] == list(range(1, len(records) + 1)), "seqs have a gap"
    by_seq = {record.seq: record.event_id for record in records}
    lost = {seq: event_id for seq, event_id in acknowledged.items() if by_seq.get(seq) != event_id}
    assert not lost, f"{len(lost)} acknowledged events are missing or changed"
    for record in records:
        assert isinstance(record.event, sqlite_appender.Tick)
    _assert_intact(path)


def _assert_intact(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    connection.close()


@pytest.mark.parametrize("round_", range(2))
async def test_acknowledged_appends_survive_kill_9(db_path: Path, anyio_backend: str, round_: int) -> None:
    wanted = random.randrange(1, 3_000)
    async with await _start_appender(db_path, writers=4, limit=0, backend=anyio_backend) as process:
        assert process.stdout is not None
        acks = BufferedByteReceiveStream(process.stdout)
        acknowledged: dict[int, UUID] = {}
        with anyio.fail_after(_DEADLINE):
            while len(acknowledged) < wanted:
                ack = await _next_ack(acks)
                assert ack is not None, f"the appender exited early with {await process.wait()}"
                acknowledged[ack[0]] = ack[1]
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
        acknowledged |= await _all_acks(acks)

    records = await _stored(db_path)
    assert len(records) >= len(acknowledged) >= wanted
    _assert_sound(db_path, records, acknowledged)


async def test_processes_appending_to_one_file_share_one_gapless_sequence(db_path: Path, anyio_backend: str) -> None:
    per_process = 400
    acknowledged: list[dict[int, UUID]] = []

    async def run_one() -> None:
        async with await _start_appender(db_path, writers=2, limit=per_process, backend=anyio_backend) as process:
            assert process.stdout is not None
            acknowledged.append(await _all_acks(BufferedByteReceiveStream(process.stdout)))
            assert await process.wait() == 0

    with anyio.fail_after(_DEADLINE):
        async with anyio.create_task_group() as group:
            group.start_soon(run_one)
            group.start_soon(run_one)

    records = await _stored(db_path)
    first, second = acknowledged
    assert not first.keys() & second.keys()
    assert len(records) == len(first) + len(second) >= 2 * per_process
    _assert_sound(db_path, records, first | second)


async def test_a_durable_subscription_resumes_after_kill_9(db_path: Path, anyio_backend: str) -> None:
    batch_size = 50
    kill_after = random.randint(5, 40)
    url = f"sqlite:///{db_path}"
    acknowledged: list[int] = []
    handled_before: list[int] = []

    def take(line: bytes) -> None:
        kind, *seqs = line.split()
        (acknowledged if kind == b"ack" else handled_before).append(int(seqs[-1]))

    with anyio.fail_after(_DEADLINE):
        command = [sys.executable, str(_PUBLISHER), url, str(batch_size), anyio_backend]
        async with await anyio.open_process(command, stdin=None, stderr=None) as process:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            while len(acknowledged) < kill_after or not handled_before:
                take(await lines.receive_until(b"\n", _MAX_LINE))
            watcher = SqliteStore(db_path)
            await watcher.open()
            try:
                while await watcher.load_checkpoint(sqlite_publisher.AUDIT) is None:
                    await watcher.wait_for_append(await watcher.head())
            finally:
                await watcher.close()
            process.send_signal(signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL
            with suppress(anyio.IncompleteRead, anyio.EndOfStream):
                while True:  # what it printed before dying was acknowledged or handled too
                    take(await lines.receive_until(b"\n", _MAX_LINE))

    records = await _stored(db_path)
    head = len(records)
    assert head >= acknowledged[-1], f"acknowledged up to {acknowledged[-1]}, stored up to {head}"
    assert head % batch_size == 0, f"a batch was torn: the head is {head}"
    assert [record.event for record in records] == [
        sqlite_publisher.Tick(batch=n // batch_size, n=n) for n in range(head)
    ]
    _assert_intact(db_path)
    assert handled_before == list(range(1, len(handled_before) + 1))
    store = SqliteStore(db_path)
    await store.open()
    checkpoint = await store.load_checkpoint(sqlite_publisher.AUDIT)
    await store.close()
    assert checkpoint is not None
    assert checkpoint <= handled_before[-1], "the checkpoint ran ahead of what was handled"

    handled_after: list[int] = []
    caught_up = anyio.Event()

    def audit(event: sqlite_publisher.Tick, record: Record) -> None:
        handled_after.append(record.seq)
        if record.seq == head + 1:
            caught_up.set()

    bus = EventBus(store=url)
    bus.subscribe(sqlite_publisher.Tick, audit, durable=True, from_seq=1, name=sqlite_publisher.AUDIT)
    with anyio.fail_after(_DEADLINE):
        async with bus:
            # one tick past the head: handled once the killed process's lease has run
            # out and everything before it was, even when its checkpoint was at the head
            await bus.publish(sqlite_publisher.Tick(batch=head // batch_size, n=head))
            await caught_up.wait()
    assert handled_after == list(range(checkpoint + 1, head + 2))
    assert set(handled_before) | set(handled_after) == set(range(1, head + 2))
