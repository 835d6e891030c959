"""Rows that cannot be turned back into records (a column corrupted behind the
store's back): each is an `EventDecodeError` naming its seq, for that record
alone. A read returns the whole page, replay goes on after it, a ``from_seq``
subscription dead-letters it and goes on, ``eventbus export`` names the seq."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from eventbus_sqlite import SqliteStore

from eventbus import Event, EventBus, EventDecodeError, Record
from eventbus.store.codec import UnreadableRecord
from eventbus.testing.conformance import new_record

_WAIT = 20


class Row(Event, name="eventbus_sqlite.tests.unreadable.Row"):
    n: int


CORRUPTIONS: dict[int, tuple[str, object, str]] = {
    2: ("headers", "{not json", "headers are not JSON"),
    3: ("event_id", "not-a-uuid", "event_id is 'not-a-uuid', not a UUID"),
    4: ("version", "v1", "version is 'v1', not an integer"),
    5: ("headers", '{"k": 1}', "not a JSON object of strings"),
    6: ("recorded_at", "yesterday", "recorded_at is 'yesterday', not an integer"),
    7: ("causation_id", b"short", "causation_id is b'short', not a UUID"),
}
"""seq -> (column, value written behind the store's back, what the error says)."""
GOOD = [1, 8]


async def _corrupted_file(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.append([new_record(Row(n=n), headers={"k": "v"}) for n in range(1, 9)])
    await store.close()
    with closing(sqlite3.connect(path)) as connection:
        for seq, (column, value, _) in CORRUPTIONS.items():
            connection.execute(f"UPDATE eventbus_records SET {column} = ? WHERE seq = ?", (value, seq))
        connection.commit()


async def _read_page(path: Path) -> Sequence[Record]:
    """The first page of the file's records, read by a store opened for it alone."""
    store = SqliteStore(path)
    await store.open()
    try:
        return await store.read()
    finally:
        await store.close()


async def test_a_read_returns_the_whole_page_with_each_bad_row_failing_alone(db_path: Path) -> None:
    await _corrupted_file(db_path)
    records = await _read_page(db_path)
    assert [record.seq for record in records] == list(range(1, 9))
    for record in records:
        if record.seq in GOOD:
            assert record.event == Row(n=record.seq)
            continue
        assert isinstance(record, UnreadableRecord)
        with pytest.raises(EventDecodeError) as caught:
            _ = record.event
        assert caught.value.seq == record.seq
        assert f"seq {record.seq}" in str(caught.value)
        assert CORRUPTIONS[record.seq][2] in str(caught.value)


PLAIN_CORRUPTIONS: dict[int, tuple[str, object, str]] = {
    2: ("version", "v1", "version is 'v1', not an integer"),
    3: ("event_id", "not-a-uuid", "event_id is 'not-a-uuid', not a UUID"),
    4: ("event_id", b"fifteen bytes!!", "event_id is b'fifteen bytes!!', not a UUID"),
    5: ("type", b"\x07", "type is b'\\x07', not text"),
    6: ("recorded_at", "yesterday", "recorded_at is 'yesterday', not an integer"),
}
"""Corruptions of rows that hold no extra field (no headers, ids or depth):
the read finds them by the types of their plain columns. (A TEXT column
turns a number written into it into text: only a blob stays another type.)"""


async def test_a_row_without_extra_fields_whose_plain_column_was_corrupted_fails_alone(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store.append([new_record(Row(n=n)) for n in range(1, 9)])
    await store.close()
    with closing(sqlite3.connect(db_path)) as connection:
        for seq, (column, value, _) in PLAIN_CORRUPTIONS.items():
            connection.execute(f"UPDATE eventbus_records SET {column} = ? WHERE seq = ?", (value, seq))
        # JSON as a blob is another type than the store writes, and still reads
        connection.execute("UPDATE eventbus_records SET data = CAST(data AS BLOB) WHERE seq = 7")
        connection.commit()
    records = await _read_page(db_path)
    assert [record.seq for record in records] == list(range(1, 9))
    assert [records[0].event, records[6].event, records[7].event] == [Row(n=1), Row(n=7), Row(n=8)]
    for record in records[1:6]:
        assert isinstance(record, UnreadableRecord)
        with pytest.raises(EventDecodeError, match=f"seq {record.seq} cannot be read") as caught:
            _ = record.event
        assert PLAIN_CORRUPTIONS[record.seq][2] in str(caught.value)


async def test_replay_and_a_from_seq_subscription_go_on_after_each_bad_row(db_path: Path) -> None:
    await _corrupted_file(db_path)
    handled: list[int] = []
    replayed: list[int | str] = []
    async with EventBus(SqliteStore(db_path)) as bus:

        @bus.subscribe(name="rows", from_seq=1)
        async def rows(event: Row) -> None:
            handled.append(event.n)

        replay = bus.replay()
        while True:
            try:
                record = await replay.__anext__()
            except StopAsyncIteration:
                break
            except EventDecodeError as exc:
                replayed.append(f"bad {exc.seq}")
            else:
                replayed.append(record.seq)
        await bus.publish(Row(n=9))
        await bus.drain(_WAIT)
        letters = await bus.dead_letters.list()
        assert bus.running

    assert replayed == [1, *(f"bad {seq}" for seq in CORRUPTIONS), 8]
    assert handled == [1, 8, 9]
    assert sorted(letter.record.seq for letter in letters) == sorted(CORRUPTIONS)
    assert all(letter.error_type == "eventbus.exceptions.EventDecodeError" for letter in letters)


async def test_export_names_the_seq_of_a_bad_row(db_path: Path) -> None:
    await _corrupted_file(db_path)

    def export() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eventbus.cli", "export", f"sqlite:///{db_path}"],
            capture_output=True,
            text=True,
            timeout=_WAIT,
        )

    done = await anyio.to_thread.run_sync(export)
    assert done.returncode == 1
    assert "seq 2" in done.stderr
    assert "headers are not JSON" in done.stderr
    assert "Traceback" not in done.stderr
