"""Soak: memory stays flat on the default store, however many events go through.

Each scenario runs in a process of its own (so its peak RSS is its own),
publishes `EVENTS` events on a default ``EventBus()`` (a `MemoryStore` that
keeps the newest 100 000 records) and samples the resident set every
`SAMPLE` events, after a ``drain()``. The store is full after 100 000
events; from `WARM` events on, peak RSS must not grow by more than `SLACK`.

- keeping-up: one async subscriber that keeps up (``"block"``, the default).
- spill-lagging: one ``backpressure="spill"`` subscriber (``max_pending=1000``)
  whose handler yields on every event, so it falls behind, stops buffering
  and reads the missed events back from the store; ``drain()`` every
  `SAMPLE` events keeps its lag below the store's bound, so nothing is lost.
- unbounded (reference, `REFERENCE_EVENTS` events): ``MemoryStore(max_records=None)``,
  as every store was before the bound; it grows with every event.

    python benchmarks/soak_memory.py            # 2 000 000 events per scenario
    python benchmarks/soak_memory.py --quick    # 400 000 events, for CI

Exits with status 1 when a bounded scenario's memory did not stay flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import anyio
import anyio.lowlevel

from eventbus import Event, EventBus, MemoryStore

EVENTS = 2_000_000
QUICK_EVENTS = 400_000
REFERENCE_EVENTS = 200_000
BATCH = 1_000
SAMPLE = 50_000
WARM = 200_000
SLACK = 16 * 1024 * 1024
"""Bytes of peak-RSS growth after `WARM` events that still count as flat (allocator noise)."""
_PAGE = resource.getpagesize()


class Tick(Event, name="bench.soak.tick"):
    n: int
    order_id: str
    amount: float


def _rss() -> int:
    """The resident set of this process now, in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _peak() -> int:
    """The peak resident set of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _run(scenario: str, events: int) -> dict[str, Any]:
    bus = EventBus(store=MemoryStore(max_records=None)) if scenario == "unbounded" else EventBus()
    handled = 0

    async def keep_up(event: Tick) -> None:
        nonlocal handled
        handled += 1

    async def lag(event: Tick) -> None:
        nonlocal handled
        handled += 1
        await anyio.lowlevel.checkpoint()

    if scenario == "spill-lagging":
        bus.subscribe(Tick, lag, backpressure="spill", max_pending=1_000, name="lagging")
    else:
        bus.subscribe(Tick, keep_up, name="keeping-up")
    samples: list[tuple[int, int, int]] = []
    started = time.perf_counter()
    async with bus:
        for start in range(0, events, BATCH):
            await bus.publish_many(
                Tick(n=n, order_id=f"A{n:09d}", amount=n * 0.01) for n in range(start, start + BATCH)
            )
            if (start + BATCH) % SAMPLE == 0:
                await bus.drain()
                samples.append((start + BATCH, _rss(), _peak()))
        elapsed = time.perf_counter() - started
        stats = bus.stats()
    name = next(iter(stats))
    return {
        "scenario": scenario,
        "events": events,
        "handled": handled,
        "dropped": stats[name].dropped,
        "rate": events / elapsed,
        "first_seq": bus.store.first_seq,
        "samples": samples,
    }


def _child(scenario: str, events: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--scenario", scenario, "--events", str(events)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])  # the bus may log to stdout first
    return result


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:>7.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events per scenario")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(anyio.run(_run, args.scenario, args.events)))
        return 0
    events = QUICK_EVENTS if args.quick else EVENTS
    print(f"eventbus memory soak: default EventBus(), {events:,} events per scenario; asyncio\n")
    print(f"RSS in MiB: from {WARM:,} events on (warm; the store is full), at the end, peak; growth of the peak\n")
    print(f"{'scenario':<15} {'events':>10} {'events/s':>10} {'warm':>7} {'end':>7} {'peak':>7} {'growth':>7}")
    failed = False
    for scenario, count in (("keeping-up", events), ("spill-lagging", events), ("unbounded", REFERENCE_EVENTS)):
        result = _child(scenario, count)
        assert result["handled"] == count, result
        samples = result["samples"]
        bounded = scenario != "unbounded"
        warm = next(sample for sample in samples if sample[0] >= WARM) if bounded else samples[0]
        end = samples[-1]
        growth = end[2] - warm[2]
        flat = not bounded or growth <= SLACK
        failed |= not flat
        per_event = f"{growth / (end[0] - warm[0]):.0f} B/event"
        verdict = ("flat" if flat else "GREW") if bounded else per_event
        print(
            f"{scenario:<15} {count:>10,} {result['rate']:>10,.0f} {_mib(warm[1])} {_mib(end[1])} {_mib(end[2])} "
            f"{_mib(growth)}  {verdict}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
