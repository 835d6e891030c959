"""Bad files and misuse: a `StoreError` naming the file, and nothing already stored is touched."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import anyio
import pytest
from eventbus_sqlite import SCHEMA_VERSION, SqliteStore

from eventbus import DeadLetter, Event, StoreError
from eventbus.testing.conformance import new_record

_PAGE_SIZE = 4096


class Noted(Event, name="eventbus_sqlite.tests.Noted"):
    text: str


async def _open_and_read(store: SqliteStore) -> None:
    await store.open()
    try:
        await store.read()
        await store.dead_letters()
    finally:
        await store.close()


async def _fill(path: Path, count: int) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.append([new_record(Noted(text=f"note {index} " * 20)) for index in range(count)])
    await store.close()


async def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "events.db"
    with pytest.raises(StoreError, match=f"the folder {path.parent} does not exist") as caught:
        await SqliteStore(path).open()
    assert str(path) in str(caught.value)
    assert not (tmp_path / "no").exists()


async def test_a_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        await SqliteStore(tmp_path).open()
    assert str(tmp_path) in str(caught.value)


async def test_a_file_that_is_not_sqlite_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = b"these are my notes, not a database\n" * 200
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a database") as caught:
        await SqliteStore(path).open()
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content


async def test_the_url_is_named_when_the_store_came_from_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing/events.db"
    with pytest.raises(StoreError) as caught:
        await SqliteStore.from_url(url).open()
    assert url in str(caught.value)


async def test_a_corrupt_file(db_path: Path) -> None:
    await _fill(db_path, 2_000)
    content = bytearray(await anyio.Path(db_path).read_bytes())
    noise = random.Random(1234)
    for offset in range(_PAGE_SIZE, len(content), 97):
        content[offset] = noise.randrange(256)
    await anyio.Path(db_path).write_bytes(bytes(content))
    # Which check trips first depends on the page layout: the b-tree or a text column.
    with pytest.raises(StoreError, match=r"malformed|Could not decode") as caught:
        await _open_and_read(SqliteStore(db_path))
    assert str(db_path) in str(caught.value)


async def test_a_file_from_a_newer_schema_is_refused_untouched(db_path: Path) -> None:
    await _fill(db_path, 3)
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE eventbus_meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    connection.close()
    before = await anyio.Path(db_path).read_bytes()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer") as caught:
        await SqliteStore(db_path).open()
    assert str(db_path) in str(caught.value)
    assert await anyio.Path(db_path).read_bytes() == before


async def test_a_file_with_a_broken_schema_version_is_refused(db_path: Path) -> None:
    await _fill(db_path, 1)
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE eventbus_meta SET value = 'one' WHERE key = 'schema_version'")
    connection.close()
    with pytest.raises(StoreError, match="no valid schema_version"):
        await SqliteStore(db_path).open()


async def test_a_dead_letter_with_a_naive_time_stores_nothing(sqlite_store: SqliteStore) -> None:
    await sqlite_store.append([new_record(Noted(text="x"))])
    (record,) = await sqlite_store.read()
    naive = datetime(2024, 1, 1, 12, 0)
    letter = DeadLetter(uuid4(), "billing", record, "builtins.ValueError", "no", "", 1, naive, naive)
    with pytest.raises(StoreError, match="naive datetime"):
        await sqlite_store.add_dead_letters([letter])
    assert list(await sqlite_store.dead_letters()) == []


async def test_a_store_that_is_not_open_refuses_work(db_path: Path) -> None:
    store = SqliteStore(db_path)
    with pytest.raises(StoreError, match="is not open"):
        await store.append([new_record(Noted(text="x"))])
    with pytest.raises(StoreError, match="is not open"):
        await store.read()
    await store.open()
    with pytest.raises(StoreError, match="already open"):
        await store.open()
    await store.close()
    with pytest.raises(StoreError, match="is not open"):
        await store.head()
    with pytest.raises(StoreError, match="is not open"):
        await store.append([new_record(Noted(text="x"))])
    with pytest.raises(StoreError, match="is not open"):
        await store.save_checkpoints({"a": 1})
