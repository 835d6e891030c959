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

The SQLite floors and scenarios run interleaved in `ROUNDS` rounds (two with
``--quick``), each on new files, and each figure's best round is printed: a
single round on a shared machine moved ``store.read`` by a factor of two
from one run to the next.

PostgreSQL runs when the server in ``EVENTBUS_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) answers, in schemas of its
own that are dropped afterwards; otherwise its lines say why they are missing.
Its floors are raw asyncpg on one connection over the rows the store wrote
(see ``_postgres.PostgresFloors``): ``COPY`` of the rows ready-built for
publishing, paged ``SELECT`` for ``store.read``, the same ``SELECT`` with
pydantic's validator on each row for the decoded replay. Its scenarios and
floors run interleaved in `ROUNDS` rounds, each on a fresh schema, and each
figure's best round is printed.

    python benchmarks/stores.py --postgres   # the PostgreSQL store only
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
from dataclasses import astuple, dataclass
from functools import partial
from pathlib import Path

import anyio
import asyncpg
from _postgres import (
    CPU_APPLICATION,
    POSTGRES_URL,
    PROBE_SCHEMA,
    CpuMeter,
    PostgresFloors,
    drop_schemas,
    postgres_schema,
    read_floors,
    write_floors,
)
from eventbus_postgres import PostgresStore
from eventbus_postgres._statements import LAYOUT
from eventbus_sqlite import SqliteStore

from eventbus import Event, EventBus
from eventbus.store import Store
from eventbus.store.codec import RECORD_FIELDS, record_values

BATCH = 1_000
"""Events per ``publish_many`` call, rows per floor transaction, records per read page."""
PUBLISHERS = 4
ROUNDS = 3
"""Rounds of each store's scenarios and floors, interleaved; the best round of each is printed."""
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

    def best(self, other: Floors | None) -> Floors:
        """The better of two rounds, figure by figure (``self`` when there is no other yet)."""
        if other is None:
            return self
        return Floors(*(max(a, b) for a, b in zip(astuple(self), astuple(other), strict=True)))


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


async def read_and_replay(store: Store, n: int, *, warm: bool = False) -> tuple[float, float]:
    """(records/s paging with ``Store.read``, events/s through ``bus.replay()``) over the first ``n`` seqs;
    ``warm``: after one untimed pass (a new PostgreSQL session's first pass over rows is slower)."""
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

        if warm:
            await read()
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


async def profile_postgres(n: int) -> None:
    """PostgreSQL ``publish_many`` under cProfile (this process's CPU against the wall clock), then raw floors."""
    schema = await postgres_schema()
    if schema is None:
        return
    profile = cProfile.Profile()
    try:
        events = _events(n)
        cpu, wall = time.process_time(), time.perf_counter()
        profile.enable()
        rate = await publish_many(PostgresStore(POSTGRES_URL, schema=schema), n, events)
        profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        floors = await write_floors(schema, n, BATCH)
    finally:
        await drop_schemas(schema, PROBE_SCHEMA)
    print(f"postgres: publish_many x{PUBLISHERS} publishers, {n:,} events under cProfile: {rate:,.0f} events/s")
    print(f"this process's CPU: {cpu:.2f} s of {wall:.2f} s wall ({cpu / wall:.0%}); the rest waits on the server\n")
    pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    print("floors: raw asyncpg, one connection, rows already encoded, batches of", f"{BATCH:,}")
    print(f"  the store's append statement (unnest of column arrays): {floors.statement:>10,.0f} rows/s")
    print(f"  COPY (copy_records_to_table):                           {floors.copy:>10,.0f} rows/s")


async def run_postgres(n: int, rounds: int) -> list[tuple[str, float, float]]:
    """Every scenario on the PostgreSQL store, interleaved with its raw-asyncpg
    floors over the rows it wrote, in ``rounds`` rounds (a fresh schema each);
    each figure's best round as (name, rate, rate / its floor). Empty when
    there is no server."""
    base = await postgres_schema()
    if base is None:
        return []
    schemas = [f"{base}_{index}" for index in range(rounds)]
    validate = Tick.__pydantic_validator__.validate_json
    best: dict[str, float] = {}
    floors = PostgresFloors()
    try:
        for schema in schemas:

            def make(schema: str = schema) -> Store:
                return PostgresStore(POSTGRES_URL, schema=schema)

            found = [(f"postgres: publish_many x{PUBLISHERS} publishers", await publish_many(make(), n))]
            floors = floors.best(await write_floors(schema, n, BATCH))
            floors = floors.best(await read_floors(schema, n, BATCH, validate))
            read_rate, replay_rate = await read_and_replay(make(), n, warm=True)
            found.append((f"postgres: store.read pages of {BATCH}", read_rate))
            found.append(("postgres: bus.replay(), events decoded", replay_rate))
            each = max(CONCURRENT, n // 5)
            found.append((f"postgres: publish x{CONCURRENT} concurrent publishers", await publish_each(make(), each)))
            for name, rate in found:
                best[name] = max(best.get(name, 0.0), rate)
    finally:
        await drop_schemas(*schemas, PROBE_SCHEMA)
    kinds = {"publish": floors.copy, "read": floors.select, "replay": floors.decoded}
    lines = [
        ("floor: asyncpg COPY of built rows, batches of 1 000", floors.copy, 1.0),
        ("floor: asyncpg the store's unnest append, run bare", floors.statement, floors.statement / floors.copy),
        ("floor: asyncpg SELECT pages", floors.select, 1.0),
        ("floor: asyncpg SELECT pages, JSON validated", floors.decoded, 1.0),
    ]
    for name, rate in best.items():
        kind_floor = next(floor for kind, floor in kinds.items() if kind in name.partition(" ")[2])
        lines.append((name, rate, rate / kind_floor))
    return lines


async def cpu_postgres(n: int) -> None:
    """CPU per event of each PostgreSQL scenario and floor (this process plus the
    server sessions, from ``/proc``), each floor beside its scenario as a ratio."""
    schema = await postgres_schema()
    if schema is None:
        return
    target = f"{schema}_floor"
    url = f"{POSTGRES_URL}?application_name={CPU_APPLICATION}"
    validate = Tick.__pydantic_validator__.validate_json
    select = f'SELECT {", ".join(RECORD_FIELDS)} FROM "{schema}".records WHERE seq >= $1 AND seq <= $2 '
    select += "ORDER BY seq LIMIT $3"
    print(f"CPU per event, PostgreSQL, {n:,} events, batches and pages of {BATCH:,}\n")
    try:
        events = _events(n)
        store = PostgresStore(url, schema=schema)
        async with EventBus(store=store) as bus:
            share = n // PUBLISHERS

            async def publisher(first: int) -> None:
                for start in range(first, first + share, BATCH):
                    await bus.publish_many(events[start : start + BATCH])

            async with CpuMeter() as publishing, anyio.create_task_group() as group:
                for index in range(PUBLISHERS):
                    group.start_soon(publisher, index * share)

            async def read() -> None:
                next_seq = 1
                while next_seq <= n and (page := await store.read(next_seq, to_seq=n, limit=BATCH)):
                    next_seq = page[-1].seq + 1

            await read()  # a new session's first pass is slower
            async with CpuMeter() as reading:
                await read()
            async with CpuMeter() as replaying:
                async for _ in bus.replay(to_seq=n):
                    pass
            records = [r for start in range(1, n + 1, BATCH) for r in await store.read(start, limit=BATCH)]
        empty = PostgresStore(POSTGRES_URL, schema=target)
        await empty.open()
        await empty.close()
        rows = [(r.seq, *record_values(r, LAYOUT)) for r in records]
        connection = await asyncpg.connect(url)
        try:

            async def floor_read(decode: bool) -> None:
                next_seq = 1
                while next_seq <= n and (page := await connection.fetch(select, next_seq, n, BATCH)):
                    if decode:
                        for row in page:
                            validate(row[3])
                    next_seq = page[-1][0] + 1

            await floor_read(False)
            async with CpuMeter() as selecting:
                await floor_read(False)
            async with CpuMeter() as decoding:
                await floor_read(True)
            async with CpuMeter() as copying:
                for start in range(0, n, BATCH):
                    await connection.copy_records_to_table(
                        "records", schema_name=target, columns=RECORD_FIELDS, records=rows[start : start + BATCH]
                    )
        finally:
            await connection.close()
    finally:
        await drop_schemas(schema, target, PROBE_SCHEMA)
    for name, meter, floor_meter in (
        (f"publish_many x{PUBLISHERS} publishers", publishing, copying),
        (f"store.read pages of {BATCH}", reading, selecting),
        ("bus.replay(), events decoded", replaying, decoding),
    ):
        print(floor_meter.line("  its floor", n))
        ratio = floor_meter.per_event(n) / meter.per_event(n)
        print(f"{meter.line(name, n)}   {ratio:5.2f} x floor")


async def main(quick: bool, only_postgres: bool) -> None:
    n = 20_000 if quick else 200_000
    print(f"eventbus store benchmark ({n:,} events per scenario, batches of {BATCH:,}; asyncio)\n")
    rounds = 2 if quick else ROUNDS
    results: list[Result] = []
    floors: Floors | None = None
    if not only_postgres:
        best: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as directory:
            for index in range(rounds):
                floors = floor(Path(directory) / f"floor-{index}.db", n).best(floors)
                for name, rate in await run_store("sqlite", partial(SqliteStore, Path(directory) / f"{index}.db"), n):
                    best[name] = max(best.get(name, 0.0), rate)
        results = list(best.items())
    postgres = await run_postgres(n, rounds)

    width = max(len(name) for name, *_ in [*results, *postgres]) + 2
    if floors is not None:
        print(f"{'floor: sqlite3 executemany, rows built beforehand':<{width}}{floors.write:>12,.0f} events/s")
        print(f"{'floor: the same, events encoded by pydantic':<{width}}{floors.write_encoding:>12,.0f} events/s")
        print(f"{'floor: sqlite3 SELECT pages':<{width}}{floors.read:>12,.0f} events/s")
        print(f"{'floor: sqlite3 SELECT pages, JSON validated':<{width}}{floors.decoded:>12,.0f} events/s\n")
    for name, rate in results:
        assert floors is not None
        if "publish" in name:
            ratios = f"{rate / floors.write_encoding:5.2f} x floor encoding ({rate / floors.write:.2f} x rows built)"
        else:
            ratios = f"{rate / (floors.decoded if 'replay' in name else floors.read):5.2f} x floor"
        print(f"{name:<{width}}{rate:>12,.0f} events/s   {ratios}")
    if postgres:
        print("\nPostgreSQL, against raw asyncpg on one connection over the same rows:")
    for name, rate, ratio in postgres:
        print(f"{name:<{width}}{rate:>12,.0f} events/s   {ratio:5.2f} x floor")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 000 events per scenario (CI)")
    parser.add_argument("--profile-postgres", action="store_true", help="profile PostgreSQL publish_many instead")
    parser.add_argument("--postgres", action="store_true", help="the PostgreSQL store only")
    parser.add_argument("--postgres-cpu", action="store_true", help="PostgreSQL's CPU per event against its floors")
    args = parser.parse_args()
    if args.postgres_cpu:
        anyio.run(cpu_postgres, 20_000 if args.quick else 200_000)
    elif args.profile_postgres:
        anyio.run(profile_postgres, 20_000 if args.quick else 200_000)
    else:
        anyio.run(main, args.quick, args.postgres)
