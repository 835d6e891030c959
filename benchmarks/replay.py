"""Replay throughput from MemoryStore beside the raw-Python floor.

``bus.replay()`` streams records page by page from the store. Here the store
is a `MemoryStore`, so the figure is the cost of the replay machinery itself
(paging, the async iterator, the type filter); the SQLite and PostgreSQL
replay figures are in ``stores.py``. The floor iterates the same records in
a plain Python list. Ratios are ``eventbus / floor``.

    python benchmarks/replay.py            # 1 000 000 events
    python benchmarks/replay.py --quick    # 100 000 events, for CI
"""

from __future__ import annotations

import argparse
import gc
import time

import anyio

from eventbus import Event, EventBus, MemoryStore, Record

BATCH = 10_000


class Tick(Event, name="bench.replay.tick"):
    n: int


class Tock(Event, name="bench.replay.tock"):
    n: int


async def _fill(bus: EventBus, n: int) -> list[Record]:
    """Store ``n`` events, every tenth a `Tock`; the stored records."""
    events = [Tock(n=i) if i % 10 == 0 else Tick(n=i) for i in range(n)]
    for start in range(0, n, BATCH):
        await bus.publish_many(events[start : start + BATCH])
    return list(await bus.store.read(1, limit=n))


def _rate(n: int, started: float) -> float:
    return n / (time.perf_counter() - started)


async def main(quick: bool) -> None:
    n = 100_000 if quick else 1_000_000
    async with EventBus(store=MemoryStore(max_records=None)) as bus:
        records = await _fill(bus, n)
        print(f"eventbus replay benchmark ({n:,} stored events, MemoryStore; asyncio)\n")
        gc.collect()
        started = time.perf_counter()
        count = sum(1 for record in records if record.event is not None)
        floor = _rate(count, started)

        gc.collect()
        started = time.perf_counter()
        replayed = 0
        async for _ in bus.replay():
            replayed += 1
        assert replayed == n, replayed
        everything = _rate(replayed, started)

        gc.collect()
        started = time.perf_counter()
        filtered = 0
        async for _ in bus.replay(Tock):
            filtered += 1
        assert filtered == n // 10, filtered
        by_type = _rate(n, started)

        print(f"{'floor: iterate a list of records':<44}{floor:>14,.0f} events/s")
        print(f"{'eventbus: bus.replay()':<44}{everything:>14,.0f} events/s")
        print(f"{'eventbus: bus.replay(Tock), 1 in 10 matches':<44}{by_type:>14,.0f} events scanned/s")
        print(f"\nratio replay / floor: {everything / floor:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 000 events (CI)")
    quick = parser.parse_args().quick
    anyio.run(main, quick)
