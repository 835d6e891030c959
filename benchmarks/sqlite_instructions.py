"""Instructions per event of SQLite replay and ``publish_many`` beside their raw sqlite3 floors.

The same scenarios as ``stores.py``, counted under valgrind's callgrind
(see ``instructions.py``) instead of timed, so the load on the machine does
not move them. Each runs in a process of its own, once with N events and
once with none; instructions per event = (N - 0) / N, threads included (the
store reads and writes in worker threads; callgrind counts every thread).

- replay: ``async for record in bus.replay()`` over a `SqliteStore` file of N
  events, each decoded; the floor pages through the same file with a raw
  ``SELECT`` of the same columns and validates each row's JSON with the
  event class's ``__pydantic_validator__.validate_json``.
- publish_many: one task publishing batches of `BATCH` events into a new
  file; the floor encodes the same events with pydantic and inserts them
  with ``executemany``, one transaction per batch. Both build the events.

    python benchmarks/sqlite_instructions.py              # N = 20 000, about two minutes
    python benchmarks/sqlite_instructions.py --quick      # N = 2 000, to catch a broken benchmark (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
from eventbus_sqlite import SqliteStore
from eventbus_sqlite._statements import RECORD_COLUMNS
from instructions import ValgrindMissing, count_instructions, interpreter
from stores import BATCH, TYPE_NAME, Tick, _events

from eventbus import EventBus

N = 20_000
N_QUICK = 2_000
KINDS = ("floor: replay", "replay", "floor: publish_many", "publish_many")
"""Each floor right before what it is the floor of."""


async def _replay(path: Path, n: int) -> None:
    async with EventBus(store=SqliteStore(path, create=False)) as bus:
        count = 0
        async for _ in bus.replay(to_seq=n):
            count += 1
    assert count == n, count


def _replay_floor(path: Path, n: int) -> None:
    decode = Tick.__pydantic_validator__.validate_json
    select = f"SELECT {RECORD_COLUMNS} FROM eventbus_records WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?"
    connection = sqlite3.connect(path)
    count, next_seq = 0, 1
    while next_seq <= n and (page := connection.execute(select, (next_seq, n, BATCH)).fetchall()):
        for row in page:
            decode(row[3])
        count += len(page)
        next_seq = page[-1][0] + 1
    connection.close()
    assert count == n, count


async def _publish(path: Path, n: int) -> None:
    events = _events(n)
    async with EventBus(store=SqliteStore(path)) as bus:
        for start in range(0, n, BATCH):
            await bus.publish_many(events[start : start + BATCH])


def _publish_floor(path: Path, n: int) -> None:
    events = _events(n)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute(
        "CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, version INTEGER NOT NULL, "
        "data TEXT NOT NULL, event_id BLOB NOT NULL, recorded_at INTEGER NOT NULL, correlation_id BLOB, "
        "causation_id BLOB, headers TEXT, depth INTEGER NOT NULL)"
    )
    insert = "INSERT INTO records (type, version, data, event_id, recorded_at, correlation_id, causation_id, headers, "
    insert += "depth) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    to_json = Tick.__pydantic_serializer__.to_json
    now = time.time_ns()
    for start in range(0, n, BATCH):
        batch = [
            (TYPE_NAME, 1, to_json(e), uuid.uuid4().bytes, now, None, None, None, 0)
            for e in events[start : start + BATCH]
        ]
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(insert, batch)
        connection.execute("COMMIT")
    connection.close()


def child(kind: str, path: Path, n: int) -> None:
    """One measured process."""
    if kind == "replay":
        asyncio.run(_replay(path, n))
    elif kind == "floor: replay":
        _replay_floor(path, n)
    elif kind == "publish_many":
        asyncio.run(_publish(path, n))
    else:
        _publish_floor(path, n)


def measure(n: int, workers: int) -> dict[str, float]:
    """Instructions per event of every kind, ``workers`` valgrind processes at a time."""
    script = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory() as directory:
        stored = Path(directory) / "stored.db"
        anyio.run(_publish, stored, n)
        runs: dict[tuple[str, int], list[str]] = {}
        for index, kind in enumerate(KINDS):
            for size in (n, 0):
                path = stored if "replay" in kind else Path(directory) / f"new-{index}-{size}.db"
                runs[(kind, size)] = [interpreter(), script, "--child", kind, str(path), str(size)]
        with ThreadPoolExecutor(workers) as pool:
            counts = dict(zip(runs, pool.map(count_instructions, runs.values()), strict=True))
    return {kind: (counts[(kind, n)] - counts[(kind, 0)]) / n for kind in KINDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=N, help=f"events per run (default {N:,})")
    parser.add_argument("--quick", action="store_true", help=f"N = {N_QUICK:,} (CI)")
    parser.add_argument("--workers", type=int, default=2, help="valgrind processes at a time (default 2)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path, size = args.child
        child(kind, Path(path), int(size))
        return
    n = N_QUICK if args.quick else args.n
    try:
        counts = measure(n, args.workers)
    except ValgrindMissing as exc:
        sys.exit(str(exc))
    print(f"SQLite store instruction counts (valgrind callgrind, {interpreter()}, N = {n:,} events)\n")
    for kind in KINDS:
        floor = counts[kind if kind.startswith("floor") else f"floor: {kind}"]
        print(f"{kind:<24}{counts[kind]:>10,.0f} instructions/event   floor / this: {floor / counts[kind]:.2f}")


if __name__ == "__main__":
    main()
