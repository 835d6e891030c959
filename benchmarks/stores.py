"""Durable publish and replay through the SQLite and PostgreSQL stores, beside a raw sqlite3 floor.

The *floor* is the least a Python program can spend to keep the same rows
in SQLite: stdlib ``sqlite3`` with the store's settings (WAL,
``synchronous=FULL``), ``executemany`` in transactions of `BATCH` rows (of
rows built beforehand, and of rows whose events pydantic encodes inside the
timing: what a publish cannot avoid), paged ``SELECT`` of the same columns
back as tuples, and the same ``SELECT`` with each row's JSON validated into
the event class by pydantic's validator (what decoding a replayed event
costs at least). Every other figure is measured in the same run and printed
with its ratio to the floor of the same kind (publishes against the floor
that encodes, reads, decoded replay); above 1.0 would beat raw sqlite3.
``sqlite_instructions.py`` counts the same SQLite replay and publish against
their floors in instructions, which the load on the machine does not move.

    python benchmarks/stores.py            # 200 000 events per scenario
    python benchmarks/stores.py --quick    # 20 000 events, a few seconds, for CI
    python benchmarks/stores.py --profile-postgres   # where PostgreSQL publish_many spends its time

Scenarios (DESIGN.md section 3: SQLite durable publish >= 200 000 events/s
with batching, replay >= 400 000 events/s):
- publish_many: `PUBLISHERS` tasks each publishing batches of `BATCH` events
  with ``publish_many``; concurrent batches share commits (group commit).
- publish: `CONCURRENT` tasks each calling ``publish`` one event at a time;
  only group commit batches them.
- store.read: paging through the store with ``Store.read`` (records built,
  events left undecoded, as catch-up reads them).
- bus.replay: ``async for record in bus.replay()``, each event decoded.

PostgreSQL runs when the server in ``EVENTBUS_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) answers, in a schema of its
own that is dropped afterwards; otherwise its lines say why they are missing.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from _postgres import POSTGRES_URL, PROBE_SCHEMA, drop_schemas, postgres_schema
from eventbus_postgres import PostgresStore
from eventbus_postgres._statements import LAYOUT, Statements, columns
from eventbus_sqlite import SqliteStore

from eventbus import Event, EventBus
from eventbus.store import Store
from eventbus.store.codec import RECORD_FIELDS, record_values

BATCH = 1_000
"""Events per ``publish_many`` call, rows per floor transaction, records per read page."""
PUBLISHERS = 4
CONCURRENT = 200

Result = tuple[str, float]


TYPE_NAME = "bench.stores.tick"


class Tick(Event, name=TYPE_NAME):
    n: int
    account: str


def _events(n: int) -> list[Tick]:
    return [Tick(n=i, account=f"acct-{i % 97}") for i in range(n)]


async def _timed(run: Callable[[], Awaitable[object]]) -> float:
    gc.collect()
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Floors:
    """Raw sqlite3 on the store's table shape and settings, events/s."""

    write: float
    """``executemany`` of rows built beforehand (events encoded, ids drawn), one transaction per batch."""
    write_encoding: float
    """The same with each event encoded by pydantic inside the timing (what a publish must do at least)."""
    read: float
    """Paged ``SELECT`` of the record columns as tuples."""
    decoded: float
    """The same ``SELECT`` with each row's JSON validated into the event class by pydantic."""


_FLOOR_TABLE = (
    "(seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL, "
    "event_id BLOB NOT NULL, recorded_at INTEGER NOT NULL, correlation_id BLOB, causation_id BLOB, headers TEXT, "
    "depth INTEGER NOT NULL)"
)
_FLOOR_COLUMNS = "type, version, data, event_id, recorded_at, correlation_id, causation_id, headers, depth"


def floor(path: Path, n: int) -> Floors:
    """Raw sqlite3 on the store's table shape and settings (see `Floors`)."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute(f"CREATE TABLE records {_FLOOR_TABLE}")
    connection.execute(f"CREATE TABLE records_encoding {_FLOOR_TABLE}")
    events = _events(n)
    ids = [uuid.uuid4().bytes for _ in events]
    now = time.time_ns()
    rows = [
        (TYPE_NAME, 1, event.model_dump_json(), id_, now, None, None, None, 0)
        for event, id_ in zip(events, ids, strict=True)
    ]
    values = f"({_FLOOR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    gc.collect()
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(f"INSERT INTO records {values}", rows[start : start + BATCH])
        connection.execute("COMMIT")
    write = n / (time.perf_counter() - started)

    to_json = Tick.__pydantic_serializer__.to_json
    gc.collect()
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        batch = [
            (TYPE_NAME, 1, to_json(event), id_, now, None, None, None, 0)
            for event, id_ in zip(events[start : start + BATCH], ids[start : start + BATCH], strict=True)
        ]
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(f"INSERT INTO records_encoding {values}", batch)
        connection.execute("COMMIT")
    write_encoding = n / (time.perf_counter() - started)

    select = f"SELECT seq, {_FLOOR_COLUMNS} FROM records WHERE seq >= ? ORDER BY seq LIMIT ?"
    rates = []
    for decode in (None, Tick.__pydantic_validator__.validate_json):
        gc.collect()
        started = time.perf_counter()
        count, next_seq = 0, 1
        while page := connection.execute(select, (next_seq, BATCH)).fetchall():
            if decode is not None:
                for row in page:
                    decode(row[3])
            count += len(page)
            next_seq = page[-1][0] + 1
        rates.append(count / (time.perf_counter() - started))
        assert count == n, count
    connection.close()
    read, decoded = rates
    return Floors(write=write, write_encoding=write_encoding, read=read, decoded=decoded)


async def publish_many(store: Store, n: int, events: list[Tick] | None = None) -> float:
    """``PUBLISHERS`` tasks of ``publish_many`` batches (of ``events``, or new ones); events/s."""
    events = events or _events(n)
    share = n // PUBLISHERS
    async with EventBus(store=store) as bus:

        async def publisher(first: int) -> None:
            for start in range(first, first + share, BATCH):
                await bus.publish_many(events[start : start + BATCH])

        async def run() -> None:
            async with anyio.create_task_group() as group:
                for index in range(PUBLISHERS):
                    group.start_soon(publisher, index * share)

        elapsed = await _timed(run)
        assert bus.head == share * PUBLISHERS, bus.head
    return share * PUBLISHERS / elapsed


async def publish_each(store: Store, n: int) -> float:
    """``CONCURRENT`` tasks each publishing one event at a time; events/s."""
    events = _events(n)
    share = n // CONCURRENT
    async with EventBus(store=store) as bus:

        async def publisher(first: int) -> None:
            for event in events[first : first + share]:
                await bus.publish(event)

        async def run() -> None:
            async with anyio.create_task_group() as group:
                for index in range(CONCURRENT):
                    group.start_soon(publisher, index * share)

        elapsed = await _timed(run)
    return share * CONCURRENT / elapsed


async def read_and_replay(store: Store, n: int) -> tuple[float, float]:
    """(records/s paging with ``Store.read``, events/s through ``bus.replay()``) over the first ``n`` seqs."""
    async with EventBus(store=store) as bus:

        async def read() -> None:
            count, next_seq = 0, 1
            while next_seq <= n and (page := await store.read(next_seq, to_seq=n, limit=BATCH)):
                count += len(page)
                next_seq = page[-1].seq + 1
            assert count == n, count

        async def replay() -> None:
            count = 0
            async for _ in bus.replay(to_seq=n):
                count += 1
            assert count == n, count

        read_rate = n / await _timed(read)
        replay_rate = n / await _timed(replay)
    return read_rate, replay_rate


async def run_store(label: str, make: Callable[[], Store], n: int) -> list[Result]:
    """Every scenario on fresh instances of one store (all writing to the same database)."""
    results = [(f"{label}: publish_many x{PUBLISHERS} publishers", await publish_many(make(), n))]
    each = max(CONCURRENT, n // 5)
    results.append((f"{label}: publish x{CONCURRENT} concurrent publishers", await publish_each(make(), each)))
    read_rate, replay_rate = await read_and_replay(make(), n)
    results.append((f"{label}: store.read pages of {BATCH}", read_rate))
    results.append((f"{label}: bus.replay(), events decoded", replay_rate))
    return results


async def postgres_floors(schema: str, target: str, n: int) -> tuple[float, float]:
    """Raw asyncpg on one connection, rows already encoded: (the store's append statement, COPY), rows/s.

    The rows are the ones ``schema`` holds; they are written again into ``target``'s empty tables.
    """
    import asyncpg

    store = PostgresStore(POSTGRES_URL, schema=schema)
    await store.open()
    try:
        records = [record for start in range(1, n + 1, BATCH) for record in await store.read(start, limit=BATCH)]
    finally:
        await store.close()
    batches = [columns(record_values(r, LAYOUT) for r in records[i : i + BATCH]) for i in range(0, n, BATCH)]
    rows = [(r.seq, *record_values(r, LAYOUT)) for r in records]
    sql = Statements(target).append
    connection = await asyncpg.connect(POSTGRES_URL)
    try:

        async def statement() -> None:
            for batch in batches:
                await connection.fetchval(sql, len(batch[0]), *batch)

        async def copy() -> None:
            await connection.execute(f'TRUNCATE "{target}".records')
            for start in range(0, n, BATCH):
                await connection.copy_records_to_table(
                    "records", schema_name=target, columns=RECORD_FIELDS, records=rows[start : start + BATCH]
                )

        return n / await _timed(statement), n / await _timed(copy)
    finally:
        await connection.close()


async def profile_postgres(n: int) -> None:
    """PostgreSQL ``publish_many`` under cProfile (this process's CPU against the wall clock), then raw floors."""
    schema = await postgres_schema()
    if schema is None:
        return
    target = f"{schema}_floor"
    profile = cProfile.Profile()
    try:
        events = _events(n)
        cpu, wall = time.process_time(), time.perf_counter()
        profile.enable()
        rate = await publish_many(PostgresStore(POSTGRES_URL, schema=schema), n, events)
        profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        empty = PostgresStore(POSTGRES_URL, schema=target)
        await empty.open()
        await empty.close()
        statement, copy = await postgres_floors(schema, target, n)
    finally:
        await drop_schemas(schema, target, PROBE_SCHEMA)
    print(f"postgres: publish_many x{PUBLISHERS} publishers, {n:,} events under cProfile: {rate:,.0f} events/s")
    print(f"this process's CPU: {cpu:.2f} s of {wall:.2f} s wall ({cpu / wall:.0%}); the rest waits on the server\n")
    pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    print("floors: raw asyncpg, one connection, rows already encoded, batches of", f"{BATCH:,}")
    print(f"  the store's append statement (unnest of column arrays): {statement:>10,.0f} rows/s")
    print(f"  COPY (copy_records_to_table):                           {copy:>10,.0f} rows/s")


async def main(quick: bool) -> None:
    n = 20_000 if quick else 200_000
    print(f"eventbus store benchmark ({n:,} events per scenario, batches of {BATCH:,}; asyncio)\n")
    with tempfile.TemporaryDirectory() as directory:
        floors = floor(Path(directory) / "floor.db", n)
        path = Path(directory) / "events.db"
        results = await run_store("sqlite", lambda: SqliteStore(path), n)
    schema = await postgres_schema()
    if schema is not None:
        try:
            results += await run_store("postgres", lambda: PostgresStore(POSTGRES_URL, schema=schema), n)
        finally:
            await drop_schemas(schema, PROBE_SCHEMA)

    width = max(len(name) for name, _ in results) + 2
    print(f"{'floor: sqlite3 executemany, rows built beforehand':<{width}}{floors.write:>12,.0f} events/s")
    print(f"{'floor: the same, events encoded by pydantic':<{width}}{floors.write_encoding:>12,.0f} events/s")
    print(f"{'floor: sqlite3 SELECT pages':<{width}}{floors.read:>12,.0f} events/s")
    print(f"{'floor: sqlite3 SELECT pages, JSON validated':<{width}}{floors.decoded:>12,.0f} events/s\n")
    for name, rate in results:
        if "publish" in name:
            ratios = f"{rate / floors.write_encoding:5.2f} x floor encoding ({rate / floors.write:.2f} x rows built)"
        else:
            ratios = f"{rate / (floors.decoded if 'replay' in name else floors.read):5.2f} x floor"
        print(f"{name:<{width}}{rate:>12,.0f} events/s   {ratios}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 000 events per scenario (CI)")
    parser.add_argument("--profile-postgres", action="store_true", help="profile PostgreSQL publish_many instead")
    args = parser.parse_args()
    if args.profile_postgres:
        anyio.run(profile_postgres, 20_000 if args.quick else 200_000)
    else:
        anyio.run(main, args.quick)
