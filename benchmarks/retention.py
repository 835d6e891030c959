"""The SQLite file under retention: bounded on disk, and what compaction costs.

Publishes `EVENTS` events through ``EventBus(store="sqlite:///...")`` in
batches of `BATCH` (``publish_many``), sampling the size on disk (the
database plus its write-ahead log) every `SAMPLE` events:

- no retention: the file grows with every event (the reference);
- ``?keep=KEEP``: background compaction after appends; from twice `KEEP`
  events on, the file must not grow by more than `SLACK` (exit status 1
  otherwise);
- by hand: ``store.compact(keep=KEEP)`` on the reference file, then its size.

Both bus runs report events/s, so the cost of compacting while publishing
shows beside the reference.

    python benchmarks/retention.py            # 2 000 000 events, keep 100 000
    python benchmarks/retention.py --quick    # 300 000 events, keep 50 000, for CI
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anyio
from eventbus_sqlite import SqliteStore

from eventbus import Event, EventBus

EVENTS, KEEP = 2_000_000, 100_000
QUICK_EVENTS, QUICK_KEEP = 300_000, 50_000
BATCH = 1_000
SAMPLE = 50_000
SLACK = 0.25
"""How much the file may still grow after it first holds twice ``keep`` events (page reuse is not exact)."""


class Order(Event, name="bench.retention.order"):
    n: int
    order_id: str
    customer: str
    amount: float


def _on_disk(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:>8.1f}"


async def _publish(url: str, path: Path, events: int) -> tuple[float, list[tuple[int, int]]]:
    """Events/s, and (events so far, bytes on disk) every `SAMPLE` events."""
    samples: list[tuple[int, int]] = []
    async with EventBus(store=url) as bus:
        started = time.perf_counter()
        for start in range(0, events, BATCH):
            await bus.publish_many(
                Order(n=n, order_id=f"A{n:09d}", customer=f"customer-{n % 977}", amount=n * 0.01)
                for n in range(start, start + BATCH)
            )
            if (start + BATCH) % SAMPLE == 0:
                samples.append((start + BATCH, _on_disk(path)))
        rate = events / (time.perf_counter() - started)
    return rate, samples


async def main(quick: bool) -> int:
    events, keep = (QUICK_EVENTS, QUICK_KEEP) if quick else (EVENTS, KEEP)
    print(f"eventbus SQLite retention benchmark ({events:,} events, keep={keep:,}; asyncio)\n")
    print(f"{'run':<28} {'events/s':>10} {'MiB at 2x keep':>14} {'MiB at end':>11} {'MiB max':>9}")
    with tempfile.TemporaryDirectory() as directory:
        reference = Path(directory) / "all.db"
        rate, samples = await _publish(f"sqlite:///{reference}", reference, events)
        warm = next(size for count, size in samples if count >= 2 * keep)
        print(f"{'no retention':<28} {rate:>10,.0f} {_mib(warm):>14} {_mib(samples[-1][1]):>11}")

        retained = Path(directory) / "kept.db"
        rate, samples = await _publish(f"sqlite:///{retained}?keep={keep}", retained, events)
        warm = next(size for count, size in samples if count >= 2 * keep)
        biggest = max(size for count, size in samples if count >= 2 * keep)
        bounded = biggest <= warm * (1 + SLACK)
        print(
            f"{f'keep={keep:,} (background)':<28} {rate:>10,.0f} {_mib(warm):>14} {_mib(samples[-1][1]):>11} "
            f"{_mib(biggest)}  {'bounded' if bounded else 'GREW'}"
        )

        store = SqliteStore(reference)
        await store.open()
        try:
            started = time.perf_counter()
            result = await store.compact(keep=keep)
            elapsed = time.perf_counter() - started
        finally:
            await store.close()
        print(
            f"{f'compact(keep={keep:,}) by hand':<28} {result.removed / elapsed:>10,.0f} {'':>14} "
            f"{_mib(_on_disk(reference)):>11}  removed {result.removed:,} in {elapsed:.1f} s"
        )
    return 0 if bounded else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events, keep={QUICK_KEEP:,}")
    sys.exit(anyio.run(main, parser.parse_args().quick))
