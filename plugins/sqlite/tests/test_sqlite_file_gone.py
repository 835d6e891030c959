"""A SQLite file deleted or replaced while the store is open: every write
after it raises `StoreError` naming the file, instead of committing into a
file no longer at its path (whose events would be gone after close)."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest
from eventbus_sqlite import SqliteOptions, SqliteStore
from eventbus_sqlite._connection import connect_writer, file_identity
from eventbus_sqlite._schema import migrate
from eventbus_sqlite._writer import Writer

from eventbus import Event, EventBus, StoreError

WAIT = 30.0


class Noted(Event, name="sqlite_file_gone.noted"):
    n: int


async def delete(path: Path, by: str) -> None:
    if by == "this process":
        os.remove(path)
    else:
        await anyio.run_process([sys.executable, "-c", "import os, sys; os.remove(sys.argv[1])", str(path)])


async def replace(path: Path, other: Path, by: str) -> None:
    if by == "this process":
        os.replace(other, path)
    else:
        script = "import os, sys; os.replace(sys.argv[1], sys.argv[2])"
        await anyio.run_process([sys.executable, "-c", script, str(other), str(path)])


async def other_store(path: Path) -> list[int]:
    """A real eventbus file of its own at ``path``, holding three events; their seqs."""
    async with EventBus(store=f"sqlite:///{path}") as bus:
        return [await bus.publish(Noted(n=-n)) for n in (1, 2, 3)]


async def stored(path: Path) -> list[tuple[int, Noted]]:
    store = SqliteStore(path, create=False)
    await store.open()
    try:
        return [(record.seq, Noted.model_validate(record.event.model_dump())) for record in await store.read()]
    finally:
        await store.close()


@pytest.mark.parametrize("by", ["this process", "a subprocess"])
async def test_a_deleted_file_fails_every_later_publish_naming_it(tmp_path: Path, by: str) -> None:
    db = tmp_path / "events.db"
    with anyio.fail_after(WAIT):
        async with EventBus(store=f"sqlite:///{db}") as bus:
            assert [await bus.publish(Noted(n=n)) for n in (1, 2)] == [1, 2]
            await delete(db, by)
            for attempt in (bus.publish(Noted(n=3)), bus.publish_many([Noted(n=4), Noted(n=5)])):
                with pytest.raises(StoreError, match="was deleted while the store was open") as caught:
                    await attempt
                assert str(db) in str(caught.value)
            with pytest.raises(StoreError, match="was deleted"):
                await bus.store.save_checkpoints({"ledger": 2})
    # nothing made a new file at the path meanwhile (a reader would have, before)
    assert not db.exists()


@pytest.mark.parametrize("by", ["this process", "a subprocess"])
async def test_a_file_renamed_over_fails_every_later_publish_and_is_left_as_it_was(tmp_path: Path, by: str) -> None:
    db, other = tmp_path / "events.db", tmp_path / "other.db"
    theirs = await other_store(other)
    with anyio.fail_after(WAIT):
        async with EventBus(store=f"sqlite:///{db}") as bus:
            assert [await bus.publish(Noted(n=n)) for n in (1, 2, 3, 4)] == [1, 2, 3, 4]
            await replace(db, other, by)
            for attempt in (bus.publish(Noted(n=5)), bus.publish_many([Noted(n=6)])):
                with pytest.raises(StoreError, match="was replaced by another file") as caught:
                    await attempt
                assert str(db) in str(caught.value)
    # the file now at the path is the other store's, untouched: none of ours went into it
    assert await stored(db) == [(seq, Noted(n=-n)) for seq, n in zip(theirs, (1, 2, 3), strict=True)]


@pytest.mark.parametrize("change", ["delete", "replace"])
async def test_the_next_run_uses_the_file_now_at_the_path_and_none_of_the_old_files_log(
    tmp_path: Path, change: str
) -> None:
    db, other = tmp_path / "events.db", tmp_path / "other.db"
    theirs = await other_store(other) if change == "replace" else []
    bus = EventBus(store=f"sqlite:///{db}")
    with anyio.fail_after(WAIT):
        async with bus:
            await bus.publish(Noted(n=1))  # in the write-ahead log, not yet in the file
            if change == "replace":
                await replace(db, other, "this process")
            else:
                await delete(db, "this process")
            with pytest.raises(StoreError, match=str(db)):
                await bus.publish(Noted(n=2))
        async with bus:  # a new run opens whatever the path names now
            seq = await bus.publish(Noted(n=4))
    # SQLite would have left the old file's log under the path's name, and the
    # file there would have read its pages (seq 2, after the old file's seq 1)
    assert seq == len(theirs) + 1
    assert [event.n for _, event in await stored(db)] == [-1, -2, -3, 4][-len(theirs) - 1 :]


def test_a_file_deleted_while_a_transaction_commits_fails_it_naming_the_file(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    where = str(db)
    connection = connect_writer(db, SqliteOptions())
    migrate(connection, where, create=True)
    writer = Writer(connection, where, db, file_identity(db, where))

    def delete_on_commit(statement: str) -> None:
        # runs as SQLite starts the statement: after the check before the commit
        if statement == "COMMIT":
            db.unlink()

    try:
        writer.save_checkpoints({"before": 1}, None)
        connection.set_trace_callback(delete_on_commit)
        with pytest.raises(StoreError, match=r"was deleted.*the transaction that had just committed went to that file"):
            writer.save_checkpoints({"during": 2}, None)
        connection.set_trace_callback(None)
        with pytest.raises(StoreError, match="was deleted"):
            writer.save_checkpoints({"after": 3}, None)
    finally:
        writer.close()
    assert not db.exists()
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"{db.as_uri()}?mode=rw", uri=True).execute("SELECT 1").fetchall()
