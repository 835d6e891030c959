"""Upgrading a file written by an older eventbus-sqlite in place.

The file is built here with that schema's own DDL (version 1, before the
causation depth was stored; version 4, before leases carried a fencing token
and event ids were unique), filled the way that release wrote rows, then
opened by today's store: everything is still there, and what the new version
adds is kept from then on.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventbus_sqlite import SCHEMA_VERSION, SqliteStore

from eventbus import Event, LeaseLost
from eventbus.store import LeaseFence
from eventbus.testing.conformance import new_record

_V1_DDL = """
CREATE TABLE eventbus_meta (key TEXT PRIMARY KEY, value NOT NULL);
CREATE TABLE eventbus_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, version INTEGER NOT NULL,
    data TEXT NOT NULL, event_id BLOB NOT NULL, recorded_at INTEGER NOT NULL,
    correlation_id BLOB, causation_id BLOB, headers TEXT
);
CREATE TABLE eventbus_checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE eventbus_dead_letters (
    position INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE, subscription TEXT NOT NULL,
    error_type TEXT NOT NULL, error_message TEXT NOT NULL, traceback TEXT NOT NULL, attempts INTEGER NOT NULL,
    first_failed_at INTEGER NOT NULL, last_failed_at INTEGER NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL, event_id BLOB NOT NULL,
    recorded_at INTEGER NOT NULL, correlation_id BLOB, causation_id BLOB, headers TEXT
);
CREATE INDEX eventbus_dead_letters_by_subscription ON eventbus_dead_letters (subscription, position);
INSERT INTO eventbus_meta (key, value) VALUES ('schema_version', 1);
"""

_V2_TO_V4_DDL = """
ALTER TABLE eventbus_records ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE eventbus_dead_letters ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
INSERT INTO eventbus_meta (key, value) VALUES ('first_seq', 1);
CREATE INDEX eventbus_dead_letters_by_seq ON eventbus_dead_letters (seq);
CREATE TABLE eventbus_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
UPDATE eventbus_meta SET value = 4 WHERE key = 'schema_version';
"""
_AN_HOUR_NS = 3_600 * 10**9


class Kept(Event, name="eventbus_sqlite.tests.migration.Kept"):
    n: int


def _write_v1_file(path: Path) -> list[bytes]:
    """A version-1 file holding three records, a dead letter and a checkpoint; the records' ids."""
    ids = [uuid4().bytes for _ in range(3)]
    now = time.time_ns()
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(_V1_DDL)
        connection.executemany(
            "INSERT INTO eventbus_records (type, version, data, event_id, recorded_at, causation_id, headers) "
            "VALUES (?, 1, ?, ?, ?, ?, ?)",
            [
                (Kept.__event_type__, f'{{"n":{n}}}', ids[n], now + n, ids[n - 1] if n else None, '{"k":"v"}')
                for n in range(3)
            ],
        )
        connection.execute(
            "INSERT INTO eventbus_dead_letters (id, subscription, error_type, error_message, traceback, attempts, "
            "first_failed_at, last_failed_at, seq, type, version, data, event_id, recorded_at) "
            "VALUES (?, 'audit', 'builtins.ValueError', 'bad', 'Traceback', 2, ?, ?, 2, ?, 1, '{\"n\":1}', ?, ?)",
            (uuid4().bytes, now, now, Kept.__event_type__, ids[1], now + 1),
        )
        connection.execute("INSERT INTO eventbus_checkpoints (name, position) VALUES ('audit', 2)")
        connection.commit()
    return ids


def _columns(path: Path, table: str) -> list[str]:
    with closing(sqlite3.connect(path)) as connection:
        return [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]


async def test_a_version_1_file_is_upgraded_in_place_and_keeps_everything(db_path: Path) -> None:
    ids = _write_v1_file(db_path)
    assert "depth" not in _columns(db_path, "eventbus_records")

    store = SqliteStore(db_path)
    await store.open()
    try:
        records = await store.read()
        assert [record.event for record in records] == [Kept(n=n) for n in range(3)]
        assert [record.event_id.bytes for record in records] == ids
        assert [record.depth for record in records] == [0, 0, 0], "rows from before the depth start chains"
        assert records[2].causation_id is not None
        assert records[2].causation_id.bytes == ids[1]
        assert dict(records[0].headers) == {"k": "v"}
        (letter,) = await store.dead_letters()
        assert (letter.subscription, letter.attempts, letter.record.seq, letter.record.depth) == ("audit", 2, 2, 0)
        assert await store.load_checkpoint("audit") == 2
        assert await store.head() == 3

        deep = new_record(Kept(n=3))
        deep.depth = 4
        await store.append([deep])
        await store.add_dead_letters([replace(letter, record=deep)])
    finally:
        await store.close()

    with closing(sqlite3.connect(db_path)) as connection:
        (version,) = connection.execute("SELECT value FROM eventbus_meta WHERE key = 'schema_version'").fetchone()
    assert version == SCHEMA_VERSION >= 2
    assert "depth" in _columns(db_path, "eventbus_records")
    assert "depth" in _columns(db_path, "eventbus_dead_letters")

    reopened = SqliteStore(db_path)
    await reopened.open()
    try:
        assert [record.depth for record in await reopened.read()] == [0, 0, 0, 4]
        (letter,) = await reopened.dead_letters()
        assert letter.record.depth == 4
    finally:
        await reopened.close()


async def test_leases_of_a_version_4_file_get_a_fencing_token(db_path: Path) -> None:
    now = time.time_ns()
    with closing(sqlite3.connect(db_path)) as connection:
        connection.executescript(_V1_DDL + _V2_TO_V4_DDL)
        connection.executemany(
            "INSERT INTO eventbus_leases (name, holder, expires_at) VALUES (?, ?, ?)",
            [("audit", "old", now + _AN_HOUR_NS), ("billing", "gone", now - _AN_HOUR_NS)],
        )
        connection.commit()
    assert "token" not in _columns(db_path, "eventbus_leases")

    store = SqliteStore(db_path)
    await store.open()
    try:
        assert await store.acquire_lease("audit", "new", 30) is None, "a lease held before the upgrade still holds"
        assert await store.acquire_lease("audit", "old", 30) == 1, "its holder renews it, with the first token"
        await store.save_checkpoints({"audit": 3}, fence=LeaseFence("audit", 1))
        assert await store.acquire_lease("billing", "new", 30) == 2, "an expired one changes hands"
        with pytest.raises(LeaseLost):
            await store.save_checkpoints({"billing": 3}, fence=LeaseFence("billing", 1))
        assert await store.load_checkpoint("audit") == 3
        assert await store.load_checkpoint("billing") is None
    finally:
        await store.close()
    assert "token" in _columns(db_path, "eventbus_leases")


async def test_records_an_older_version_stored_twice_stay_readable_and_ids_are_unique_from_then_on(
    db_path: Path,
) -> None:
    twice, once = uuid4().bytes, uuid4().bytes
    now = time.time_ns()
    with closing(sqlite3.connect(db_path)) as connection:
        connection.executescript(_V1_DDL + _V2_TO_V4_DDL)
        connection.executemany(
            "INSERT INTO eventbus_records (type, version, data, event_id, recorded_at) VALUES (?, 1, ?, ?, ?)",
            [
                (Kept.__event_type__, f'{{"n":{n}}}', event_id, now + n)
                for n, event_id in enumerate([twice, once, twice])
            ],
        )
        connection.commit()

    store = SqliteStore(db_path)
    await store.open()
    try:
        assert [(record.seq, record.event_id.bytes) for record in await store.read()] == [
            (1, twice),
            (2, once),
            (3, twice),
        ]
        again = [new_record(Kept(n=9), event_id=UUID(bytes=twice)), new_record(Kept(n=10), event_id=UUID(bytes=once))]
        assert sorted(await store.append(again)) == [0, 1]
        assert [record.seq for record in again] == [1, 2], "the first record of a repeated id is the stored one"
        assert await store.head() == 3
    finally:
        await store.close()
