"""SQLite retention: options from the URL and the constructor, and a file that stays small on disk."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from eventbus_sqlite import SqliteOptions, SqliteStore, parse_url
from eventbus_sqlite._schema import MIGRATIONS

from eventbus import Event, HistoryTruncated, Retention
from eventbus.testing.conformance import new_record

_BATCH = 500
_PAYLOAD = "x" * 400


class Filler(Event, name="eventbus_sqlite.tests.retention.Filler"):
    n: int
    payload: str


def _batch(start: int) -> list[Any]:
    return [new_record(Filler(n=n, payload=_PAYLOAD)) for n in range(start, start + _BATCH)]


def _on_disk(path: Path) -> int:
    """Bytes of the database and its write-ahead log."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _pragma(path: Path, name: str) -> int:
    with sqlite3.connect(path) as connection:
        value = int(connection.execute(f"PRAGMA {name}").fetchone()[0])
    connection.close()
    return value


def test_retention_in_the_query_string() -> None:
    _, options = parse_url("sqlite:///events.db?keep=1000000&keep_age=30d&compact_interval=0.5&synchronous=normal")
    assert options == SqliteOptions(
        synchronous="normal", retention=Retention(keep=1_000_000, keep_age=timedelta(days=30), compact_interval=0.5)
    )
    _, options = parse_url("sqlite:///events.db?keep_age=12h")
    assert options.retention == Retention(keep_age=timedelta(hours=12))
    assert parse_url("sqlite:///events.db")[1].retention is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("keep=lots", "keep must be a whole number"),
        ("keep=-5", "keep must be an int >= 0"),
        ("keep_age=30", "keep_age: not an age: '30'"),
        ("keep_age=0d", "keep_age: an age must be greater than zero"),
        ("keep=10&compact_interval=soon", "compact_interval must be a number"),
        ("keep=10&compact_interval=-1", "compact_interval must be a number of seconds >= 0"),
        ("retention=10", "unknown SQLite store option 'retention'"),
    ],
)
def test_bad_retention_in_the_query_string_names_it(query: str, message: str) -> None:
    url = f"sqlite:///events.db?{query}"
    with pytest.raises(ValueError, match=message) as caught:
        SqliteStore.from_url(url)
    assert url in str(caught.value)


def test_retention_from_the_constructor(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    assert SqliteStore(path, retention=5_000).options.retention == Retention(keep=5_000)
    assert SqliteStore(path, retention=timedelta(days=7)).options.retention == Retention(keep_age=timedelta(days=7))
    both = Retention(keep=10, keep_age=timedelta(hours=1))
    assert SqliteStore(path, SqliteOptions(retention=Retention(keep=3)), retention=both).options.retention == both
    url = f"sqlite:///{path}?keep=10"
    assert SqliteStore.from_url(url, retention=20).options.retention == Retention(keep=20)
    with pytest.raises(TypeError, match="retention must be"):
        SqliteStore(path, retention="30d")


async def test_a_new_file_gives_freed_pages_back(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteStore(path)
    await store.open()
    try:
        for start in range(0, 40 * _BATCH, _BATCH):
            await store.append(_batch(start))
        full = _on_disk(path)
        result = await store.compact(keep=_BATCH)
        assert result.removed == 39 * _BATCH
        assert _on_disk(path) < full / 10
    finally:
        await store.close()
    assert _pragma(path, "auto_vacuum") == 2


async def test_under_retention_the_file_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteStore(path, retention=Retention(keep=4 * _BATCH, compact_interval=0))
    await store.open()
    sizes = []
    try:
        for round_ in range(60):
            await store.append(_batch(round_ * _BATCH))
            sizes.append(_on_disk(path))
        assert store.first_seq == 56 * _BATCH + 1
    finally:
        await store.close()
    # After the first rounds fill it, the file stops growing: freed pages are reused.
    assert max(sizes[-20:]) <= 1.25 * max(sizes[10:20])


async def test_compacting_by_hand_converts_a_file_made_without_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteStore(path)
    await store.open()
    for start in range(0, 20 * _BATCH, _BATCH):
        await store.append(_batch(start))
    await store.close()
    with sqlite3.connect(path, isolation_level=None) as connection:
        connection.execute("PRAGMA auto_vacuum = NONE")
        connection.execute("VACUUM")
    connection.close()
    assert _pragma(path, "auto_vacuum") == 0
    full = _on_disk(path)
    store = SqliteStore(path)
    await store.open()
    try:
        result = await store.compact(keep=_BATCH)
        assert (result.removed, result.first_seq) == (19 * _BATCH, 19 * _BATCH + 1)
        assert len(await store.read(result.first_seq, limit=2 * _BATCH)) == _BATCH
    finally:
        await store.close()
    assert _pragma(path, "auto_vacuum") == 2
    assert _on_disk(path) < full / 5


async def test_a_file_of_schema_version_one_gains_first_seq(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path, isolation_level=None) as connection:
        for statement in MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute("INSERT INTO eventbus_meta (key, value) VALUES ('schema_version', 1)")
    connection.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert store.first_seq == 1
        await store.append(_batch(0))
        await store.compact(keep=10)
        assert store.first_seq == _BATCH - 9
        with pytest.raises(HistoryTruncated):
            await store.read(1)
    finally:
        await store.close()
