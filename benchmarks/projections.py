"""Projection catch-up on the SQLite and PostgreSQL stores, beside the same handler
without a transaction and a raw-driver floor.

A projection here keeps one read-model row per key up to date: each event
upserts its key's row (``INSERT ... ON CONFLICT DO UPDATE``, 1 000 keys, so
all but the first 1 000 events update a row). `N` events are published
first; each scenario then subscribes from seq 1 on a running bus and is timed
until its handler has seen the last event and the bus has drained. Three ways
to keep the same read model, on each store:

- projection: a durable subscription whose handler takes an
  `eventbus.Transaction`; each delivery is one transaction on the store's
  database (checkpoint read and locked, the upsert, checkpoint saved, commit).
- plain durable: the same upsert on the application's own connection (sqlite3
  in autocommit, or an asyncpg connection), each statement committing alone,
  the checkpoint saved the bus's usual way (every 1 000 deliveries). After a
  crash, up to 1 000 events are applied twice.
- floor: no bus; the same `N` upserts done directly with the driver, each
  with its checkpoint ``UPDATE`` in a transaction of its own (what a
  hand-written exactly-once projection costs at least). The values are ready
  made: reading and decoding the events is not in it.

Ratios are to the floor measured in the same run. Each figure is dominated by
commits: on SQLite with ``synchronous=full`` every commit fsyncs the
write-ahead log; on PostgreSQL every commit waits for the server's WAL flush,
and every statement is a round trip.

    python benchmarks/projections.py            # 10 000 events per scenario, best of 3 rounds (2 minutes)
    python benchmarks/projections.py --quick    # 1 000 events, one round, for CI
    python benchmarks/projections.py --profile sqlite   # the projection under cProfile

PostgreSQL runs when the server in ``EVENTBUS_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) answers, in a schema of its
own that is dropped afterwards; otherwise its lines say why they are missing.
The SQLite file is in a temporary directory, with the store's defaults (WAL,
``synchronous=full``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from _postgres import POSTGRES_URL, PROBE_SCHEMA, drop_schemas, postgres_schema
from eventbus_postgres import PostgresStore
from eventbus_sqlite import SqliteStore

from eventbus import Event, EventBus, Transaction
from eventbus.store import Store

BATCH = 1_000
"""Events per ``publish_many`` call when filling the store."""
KEYS = 1_000
"""Read-model rows: event ``n`` updates the row of key ``n % KEYS``."""


class Scored(Event, name="bench.projections.scored"):
    n: int
    key: str


@dataclass(frozen=True)
class Database:
    """How one store's database is reached and spoken to by the scenarios."""

    make_store: Callable[[], Store]
    placeholders: tuple[str, str]
    """The driver's first and second placeholder (``?`` or ``$1``, ``$2``)."""

    def upsert(self, table: str) -> str:
        """The read model's statement: (key, amount) added to the key's row."""
        first, second = self.placeholders
        return (
            f"INSERT INTO {table} AS view (key, total, events) VALUES ({first}, {second}, 1) "
            "ON CONFLICT (key) DO UPDATE SET total = view.total + excluded.total, events = view.events + 1"
        )

    def save_position(self, table: str) -> str:
        """The floor's checkpoint statement: (position, name)."""
        first, second = self.placeholders
        return f"UPDATE {table} SET position = {first} WHERE name = {second}"


def _events(n: int) -> list[Scored]:
    return [Scored(n=i, key=f"k{i % KEYS}") for i in range(n)]


def _rows(n: int) -> list[tuple[str, int]]:
    """The floor's upserts, ready made: what each event writes."""
    return [(event.key, event.n) for event in _events(n)]


def _expected_total(n: int) -> int:
    return n * (n - 1) // 2


async def fill(store: Store, n: int) -> None:
    """Publish the ``n`` events the scenarios catch up over."""
    events = _events(n)
    async with EventBus(store=store) as bus:
        for start in range(0, n, BATCH):
            await bus.publish_many(events[start : start + BATCH])
        assert bus.head == n, bus.head


class Progress:
    """Counts a scenario's deliveries; ``done`` is set at the ``n``-th."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.done = anyio.Event()

    def tick(self) -> None:
        self.seen += 1
        if self.seen == self.n:
            self.done.set()


async def catch_up(store: Store, name: str, progress: Progress, handler: Callable[..., Awaitable[None]]) -> float:
    """Subscribe ``handler`` durably from seq 1 on a running bus over ``store``;
    seconds until it has seen the last event and the bus has drained."""
    async with EventBus(store=store) as bus:
        gc.collect()
        started = time.perf_counter()
        bus.subscribe(Scored, handler, name=name, durable=True, from_seq=1)
        await progress.done.wait()
        await bus.drain()
        return time.perf_counter() - started


# -- SQLite ---------------------------------------------------------------------------


def sqlite_database(path: Path) -> Database:
    return Database(lambda: SqliteStore(path), ("?", "?"))


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """The application's own connection: autocommit, the store's settings."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


def sqlite_table(path: Path, table: str) -> None:
    connection = sqlite_connect(path)
    connection.execute(f"CREATE TABLE {table} (key TEXT PRIMARY KEY, total INTEGER NOT NULL, events INTEGER NOT NULL)")
    connection.close()


def sqlite_check(path: Path, table: str, n: int) -> None:
    connection = sqlite_connect(path)
    events, total = connection.execute(f"SELECT sum(events), sum(total) FROM {table}").fetchone()
    connection.close()
    assert (events, total) == (n, _expected_total(n)), (table, events, total)


def sqlite_floor(path: Path, db: Database, n: int, tag: str) -> float:
    """Raw sqlite3: each upsert with its checkpoint ``UPDATE`` in a transaction of its own."""
    sqlite_table(path, f"floor_view_{tag}")
    connection = sqlite_connect(path)
    connection.execute(f"CREATE TABLE floor_checkpoint_{tag} (name TEXT PRIMARY KEY, position INTEGER NOT NULL)")
    connection.execute(f"INSERT INTO floor_checkpoint_{tag} VALUES ('floor', 0)")
    upsert, save = db.upsert(f"floor_view_{tag}"), db.save_position(f"floor_checkpoint_{tag}")
    rows = _rows(n)
    gc.collect()
    started = time.perf_counter()
    for seq, row in enumerate(rows, 1):
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(upsert, row)
        connection.execute(save, (seq, "floor"))
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    sqlite_check(path, f"floor_view_{tag}", n)
    return n / elapsed


async def sqlite_projection(path: Path, db: Database, n: int, tag: str) -> float:
    sqlite_table(path, f"projected_view_{tag}")
    upsert = db.upsert(f"projected_view_{tag}")

    progress = Progress(n)

    async def project(event: Scored, tx: Transaction) -> None:
        await tx.execute(upsert, event.key, event.n)
        progress.tick()

    elapsed = await catch_up(db.make_store(), f"projected_{tag}", progress, project)
    sqlite_check(path, f"projected_view_{tag}", n)
    return n / elapsed


async def sqlite_plain(path: Path, db: Database, n: int, tag: str) -> float:
    sqlite_table(path, f"plain_view_{tag}")
    upsert = db.upsert(f"plain_view_{tag}")
    connection = sqlite_connect(path)

    progress = Progress(n)

    async def write(event: Scored) -> None:
        connection.execute(upsert, (event.key, event.n))
        progress.tick()

    try:
        elapsed = await catch_up(db.make_store(), f"plain_{tag}", progress, write)
    finally:
        connection.close()
    sqlite_check(path, f"plain_view_{tag}", n)
    return n / elapsed


# -- PostgreSQL -----------------------------------------------------------------------


def postgres_database(schema: str) -> Database:
    return Database(lambda: PostgresStore(POSTGRES_URL, schema=schema), ("$1", "$2"))


async def postgres_connect(schema: str) -> Any:
    """The application's own asyncpg connection, its search path on the benchmark's schema."""
    return await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})


async def postgres_table(schema: str, table: str) -> None:
    connection = await postgres_connect(schema)
    try:
        await connection.execute(
            f"CREATE TABLE {table} (key TEXT PRIMARY KEY, total BIGINT NOT NULL, events BIGINT NOT NULL)"
        )
    finally:
        await connection.close()


async def postgres_check(schema: str, table: str, n: int) -> None:
    connection = await postgres_connect(schema)
    try:
        events, total = await connection.fetchrow(f"SELECT sum(events)::bigint, sum(total)::bigint FROM {table}")
    finally:
        await connection.close()
    assert (events, total) == (n, _expected_total(n)), (table, events, total)


async def postgres_floor(schema: str, db: Database, n: int, tag: str) -> float:
    """Raw asyncpg on one connection: each upsert with its checkpoint ``UPDATE`` in a transaction of its own."""
    await postgres_table(schema, f"floor_view_{tag}")
    connection = await postgres_connect(schema)
    try:
        await connection.execute(
            f"CREATE TABLE floor_checkpoint_{tag} (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
        )
        await connection.execute(f"INSERT INTO floor_checkpoint_{tag} VALUES ('floor', 0)")
        upsert, save = db.upsert(f"floor_view_{tag}"), db.save_position(f"floor_checkpoint_{tag}")
        rows = _rows(n)
        gc.collect()
        started = time.perf_counter()
        for seq, (key, amount) in enumerate(rows, 1):
            async with connection.transaction():
                await connection.execute(upsert, key, amount)
                await connection.execute(save, seq, "floor")
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    await postgres_check(schema, f"floor_view_{tag}", n)
    return n / elapsed


async def postgres_projection(schema: str, db: Database, n: int, tag: str) -> float:
    await postgres_table(schema, f"projected_view_{tag}")
    upsert = db.upsert(f"{schema}.projected_view_{tag}")

    progress = Progress(n)

    async def project(event: Scored, tx: Transaction) -> None:
        await tx.execute(upsert, event.key, event.n)
        progress.tick()

    elapsed = await catch_up(db.make_store(), f"projected_{tag}", progress, project)
    await postgres_check(schema, f"projected_view_{tag}", n)
    return n / elapsed


async def postgres_plain(schema: str, db: Database, n: int, tag: str) -> float:
    await postgres_table(schema, f"plain_view_{tag}")
    upsert = db.upsert(f"plain_view_{tag}")
    connection = await postgres_connect(schema)

    progress = Progress(n)

    async def write(event: Scored) -> None:
        await connection.execute(upsert, event.key, event.n)
        progress.tick()

    try:
        elapsed = await catch_up(db.make_store(), f"plain_{tag}", progress, write)
    finally:
        await connection.close()
    await postgres_check(schema, f"plain_view_{tag}", n)
    return n / elapsed


# -- running --------------------------------------------------------------------------

Result = tuple[str, float, float]
"""(scenario, events/s, floor of the same store)."""

Scenario = Callable[[int, str], Awaitable[float]]
"""Runs one scenario over ``n`` events with tables named by a tag; its events/s."""


async def best_of(rounds: int, n: int, scenarios: dict[str, Scenario]) -> dict[str, float]:
    """Each scenario once per round, the rounds interleaved; each one's best round."""
    best: dict[str, float] = {}
    for index in range(rounds):
        for name, scenario in scenarios.items():
            best[name] = max(best.get(name, 0.0), await scenario(n, f"r{index}"))
    return best


def results(label: str, best: dict[str, float]) -> list[Result]:
    floor = best["floor"]
    return [(f"{label}: {name}", rate, floor) for name, rate in best.items()]


async def run_sqlite(directory: Path, n: int, rounds: int) -> list[Result]:
    path = directory / "events.db"
    db = sqlite_database(path)
    await fill(db.make_store(), n)

    async def floor(n: int, tag: str) -> float:
        return sqlite_floor(path, db, n, tag)

    best = await best_of(
        rounds,
        n,
        {
            "floor": floor,
            "projection": partial(sqlite_projection, path, db),
            "plain durable": partial(sqlite_plain, path, db),
        },
    )
    return results("sqlite", best)


async def run_postgres(n: int, rounds: int) -> list[Result]:
    schema = await postgres_schema()
    if schema is None:
        return []
    db = postgres_database(schema)
    try:
        await fill(db.make_store(), n)
        best = await best_of(
            rounds,
            n,
            {
                "floor": partial(postgres_floor, schema, db),
                "projection": partial(postgres_projection, schema, db),
                "plain durable": partial(postgres_plain, schema, db),
            },
        )
    finally:
        await drop_schemas(schema, PROBE_SCHEMA)
    return results("postgres", best)


async def main(quick: bool) -> None:
    n, rounds = (1_000, 1) if quick else (10_000, 3)
    print(
        f"eventbus projection benchmark ({n:,} events caught up per scenario, {KEYS:,} read-model rows; "
        f"best of {rounds} interleaved rounds; asyncio)\n"
    )
    print("floor: the driver alone, each upsert with its checkpoint UPDATE in a transaction of its own")
    print("projection: a handler taking tx: Transaction (one transaction per delivery, checkpoint in it)")
    print("plain durable: the same upsert on the application's own autocommit connection, checkpoint every 1 000\n")
    with tempfile.TemporaryDirectory() as directory:
        found = await run_sqlite(Path(directory), n, rounds)
    found += await run_postgres(n, rounds)
    width = max(len(name) for name, _, _ in found) + 2
    for name, rate, floor in found:
        print(f"{name:<{width}}{rate:>10,.0f} events/s   {rate / floor:5.2f} x floor")


async def profile(store: str, n: int) -> None:
    """The projection scenario alone under cProfile: this process's CPU against the wall clock."""
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as directory:
        schema = None
        if store == "sqlite":
            path = Path(directory) / "events.db"
            db = sqlite_database(path)
            await fill(db.make_store(), n)

            def project() -> Awaitable[float]:
                return sqlite_projection(path, db, n, "profiled")
        else:
            schema = await postgres_schema()
            if schema is None:
                return
            db = postgres_database(schema)
            await fill(db.make_store(), n)

            def project() -> Awaitable[float]:
                return postgres_projection(schema, db, n, "profiled")

        try:
            cpu, wall = time.process_time(), time.perf_counter()
            profiler.enable()
            rate = await project()
            profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            if schema is not None:
                await drop_schemas(schema, PROBE_SCHEMA)
    print(f"{store}: projection, {n:,} events under cProfile: {rate:,.0f} events/s")
    print(f"this process's CPU: {cpu:.2f} s of {wall:.2f} s wall ({cpu / wall:.0%})\n")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 000 events per scenario (CI)")
    parser.add_argument("--profile", choices=["sqlite", "postgres"], help="profile one store's projection instead")
    args = parser.parse_args()
    count = 1_000 if args.quick else 10_000
    if args.profile:
        anyio.run(profile, args.profile, count)
    else:
        anyio.run(main, args.quick)
