"""What the SQLite store does beyond the conformance suite: its file, group commit, waking tailers, URLs on a bus."""

from __future__ import annotations

import gc
import sqlite3
from pathlib import Path

import anyio
import pytest
from eventbus_sqlite import SCHEMA_VERSION, SqliteOptions, SqliteStore
from eventbus_sqlite._statements import CHUNK_ROWS

from eventbus import Event, EventBus, Record, StoreError, StoreNotFound
from eventbus.store import store_from_url
from eventbus.store import url as url_module
from eventbus.testing.conformance import new_record


class Counted(Event, name="eventbus_sqlite.tests.Counted"):
    number: int


class Loose(Event, name="eventbus_sqlite.tests.Loose"):
    value: object


def _counted(count: int, start: int = 0) -> list[Record]:
    return [new_record(Counted(number=number)) for number in range(start, start + count)]


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute(sql).fetchall()
    connection.close()
    return rows


async def test_the_file_is_in_wal_mode_with_the_current_schema(sqlite_store: SqliteStore) -> None:
    assert _query(sqlite_store.path, "PRAGMA journal_mode") == [("wal",)]
    assert _query(sqlite_store.path, "SELECT value FROM eventbus_meta WHERE key = 'schema_version'") == [
        (SCHEMA_VERSION,)
    ]


async def test_events_are_stored_as_readable_json(sqlite_store: SqliteStore) -> None:
    await sqlite_store.append([new_record(Counted(number=7), headers={"origin": "billing"})])
    assert _query(sqlite_store.path, "SELECT type, version, data, headers FROM eventbus_records") == [
        ("eventbus_sqlite.tests.Counted", 1, '{"number":7}', '{"origin":"billing"}')
    ]
    assert _query(sqlite_store.path, "SELECT json_extract(data, '$.number') FROM eventbus_records") == [(7,)]


async def test_it_shares_a_file_with_an_applications_tables(db_path: Path) -> None:
    with sqlite3.connect(db_path) as connection:
        connection.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
        connection.execute("INSERT INTO orders VALUES ('A1')")
    connection.close()
    store = SqliteStore(db_path)
    await store.open()
    await store.append(_counted(2))
    await store.close()
    assert _query(db_path, "SELECT id FROM orders") == [("A1",)]


@pytest.mark.parametrize("sizes", [[CHUNK_ROWS - 1, CHUNK_ROWS, CHUNK_ROWS + 1], [2 * CHUNK_ROWS + 37, 1]])
async def test_batches_across_insert_chunks_keep_their_order(sqlite_store: SqliteStore, sizes: list[int]) -> None:
    batches = []
    start = 0
    for size in sizes:
        batches.append(_counted(size, start))
        start += size
    for batch in batches:
        await sqlite_store.append(batch)
    stored = await sqlite_store.read(limit=start)
    assert [record.seq for record in stored] == list(range(1, start + 1))
    assert [record.seq for batch in batches for record in batch] == list(range(1, start + 1))
    assert [record.event for record in stored] == [Counted(number=number) for number in range(start)]


async def test_one_callers_bad_batch_does_not_fail_the_others_in_its_group_commit(
    sqlite_store: SqliteStore,
) -> None:
    good = [_counted(3, start=10 * writer) for writer in range(5)]
    bad = [*_counted(2, start=100), new_record(Loose(value=object()))]
    failures: list[StoreError] = []

    async def append_bad() -> None:
        with pytest.raises(StoreError, match="cannot store") as caught:
            await sqlite_store.append(bad)
        failures.append(caught.value)

    async with anyio.create_task_group() as group:
        for batch in good[:2]:
            group.start_soon(sqlite_store.append, batch)
        group.start_soon(append_bad)
        for batch in good[2:]:
            group.start_soon(sqlite_store.append, batch)

    assert len(failures) == 1
    stored = await sqlite_store.read()
    assert sorted(record.event_id for record in stored) == sorted(record.event_id for batch in good for record in batch)
    assert [record.seq for record in stored] == list(range(1, 16))


async def test_a_page_read_is_held_by_its_caller_alone(sqlite_store: SqliteStore) -> None:
    """A worker thread keeps its last result until its next job; the page must not be
    that result, or its records (and the events decoded from them) outlive the caller's
    use of them, and the garbage collector walks them."""
    await sqlite_store.append(_counted(3))
    page = await sqlite_store.read(1)
    record = page[0]
    del page
    assert not [referrer for referrer in gc.get_referrers(record) if isinstance(referrer, (list, tuple))]


async def test_wait_for_append_wakes_at_once_for_this_processs_appends(db_path: Path) -> None:
    store = SqliteStore(db_path, SqliteOptions(poll_interval=3_600))
    await store.open()
    try:
        woke = anyio.Event()

        async def wait() -> None:
            await store.wait_for_append(0)
            woke.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                await store.append(_counted(1))
                await woke.wait()
    finally:
        await store.close()


async def test_closing_waits_for_an_append_in_progress(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    batch = _counted(500)
    async with anyio.create_task_group() as group:
        group.start_soon(store.append, batch)
        await anyio.wait_all_tasks_blocked()
        await store.close()
    assert [record.seq for record in batch] == list(range(1, 501))
    assert _query(db_path, "SELECT count(*) FROM eventbus_records") == [(500,)]


async def test_concurrent_appends_share_commits(sqlite_store: SqliteStore) -> None:
    batches = [_counted(2, start=10 * writer) for writer in range(50)]
    async with anyio.create_task_group() as group:
        for batch in batches:
            group.start_soon(sqlite_store.append, batch)
    stats = sqlite_store.stats()
    assert (stats.appends, stats.records) == (50, 100)
    assert stats.commits <= 5, f"50 concurrent appends took {stats.commits} transactions"
    stored = await sqlite_store.read()
    assert [record.seq for record in stored] == list(range(1, 101))
    for batch in batches:
        assert batch[1].seq == batch[0].seq + 1, "a caller's batch was split"


async def test_without_create_a_missing_file_is_an_error_naming_it_and_stays_missing(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    store = SqliteStore.from_url(f"sqlite:///{path}", create=False)
    with pytest.raises(StoreError, match=f"sqlite:///{path} .* does not exist"):
        await store.open()
    assert not path.exists()


async def test_without_create_a_file_without_the_store_tables_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    _query(path, "CREATE TABLE notes (text TEXT)")
    with pytest.raises(StoreError, match="holds no eventbus store"):
        await store_from_url(f"sqlite:///{path}", create=False).open()
    assert _query(path, "SELECT name FROM sqlite_master") == [("notes",)]


async def test_without_create_an_existing_store_opens(sqlite_store: SqliteStore) -> None:
    await sqlite_store.append(_counted(2))
    existing = SqliteStore(sqlite_store.path, create=False)
    await existing.open()
    try:
        assert [record.event for record in await existing.read()] == [Counted(number=0), Counted(number=1)]
    finally:
        await existing.close()


async def test_a_bus_opens_its_store_from_a_sqlite_url(db_path: Path) -> None:
    handled: list[int] = []

    async def count(event: Counted) -> None:
        handled.append(event.number)

    async with EventBus(store=f"sqlite:///{db_path}") as bus:
        bus.subscribe(Counted, count)
        assert isinstance(bus.store, SqliteStore)
        assert bus.store.path == db_path
        assert await bus.publish_many([Counted(number=1), Counted(number=2)]) == [1, 2]
        await bus.drain(timeout=10)
    assert handled == [1, 2]
    assert _query(db_path, "SELECT count(*) FROM eventbus_records") == [(2,)]


def test_without_its_plugin_a_url_names_the_distribution_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(url_module, "entry_points", lambda group: [])
    with pytest.raises(StoreNotFound, match="install the 'eventbus-sqlite' distribution"):
        EventBus(store="sqlite:///events.db")


async def test_each_record_read_has_its_own_seq_whether_a_pages_seqs_are_consecutive_or_not(
    sqlite_store: SqliteStore,
) -> None:
    # a page of consecutive seqs is read without them (they are counted); a page with
    # seqs left out, by ``types`` or by a row deleted by hand, reads them with the rows
    events = [Counted(number=seq) if seq % 3 else Loose(value=seq) for seq in range(1, 13)]
    await sqlite_store.append([new_record(event) for event in events])
    with sqlite3.connect(sqlite_store.path) as connection:
        connection.execute("DELETE FROM eventbus_records WHERE seq = 8")
    connection.close()

    def numbers(records: list[Record]) -> list[tuple[int, object]]:
        return [
            (record.seq, record.event.number if isinstance(record.event, Counted) else record.event.value)
            for record in records
        ]

    assert numbers(list(await sqlite_store.read(1, limit=5))) == [(seq, seq) for seq in range(1, 6)]
    assert numbers(list(await sqlite_store.read(6, limit=4))) == [(6, 6), (7, 7), (9, 9), (10, 10)]
    counted = [seq for seq in range(1, 13) if seq % 3 and seq != 8]
    assert numbers(list(await sqlite_store.read(1, types=["eventbus_sqlite.tests.Counted"]))) == [
        (seq, seq) for seq in counted
    ]
    assert numbers(list(await sqlite_store.read(3, to_seq=9, types=["eventbus_sqlite.tests.Loose"]))) == [
        (3, 3),
        (6, 6),
        (9, 9),
    ]
    assert await sqlite_store.read(13) == []
