"""Publish-to-handled latency at a paced rate: the tail a service feels, beside the raw floor.

A publisher paced at `RATE` events/s (10 000 by default) builds each event
when it is due, notes the time, and publishes it; one async handler notes
when it runs. The latency of an event is handled minus published, on
``time.perf_counter_ns``. Cases, each in a process of its own (a fresh heap:
what one case leaves in memory must not slow the next one's collector):

- floor: an anyio memory object stream and a task receiving from it and
  awaiting the same handler: the least any bus that hands events to a task
  of their subscriber's can do.
- eventbus: the default ``EventBus()`` (a `MemoryStore` keeping the newest
  100 000 records), filled to that bound before the clock starts, as a
  service that has run for a while has it; one ``bus.subscribe``d handler.
- eventbus-sqlite: ``EventBus(store="sqlite:///...?synchronous=normal")`` on a
  new file, the same events published by `SQLITE_PUBLISHERS` concurrent
  publishers, which share the schedule: its own tail (the file is in it, so
  the floor is not its measure). ``synchronous=normal`` keeps every
  acknowledged event across a crashed process, not a power cut; with the
  default ``full`` each group commit waits for an fsync, which on this
  machine's disk (about 14 ms) held four publishers to some 300 events/s.
  Where the store cannot keep the pace, ``late`` says by how much.

The publisher waits for each event's due time by yielding to the event loop
(a busy wait: a sleep cannot wake every 100 µs), so it takes a core. An event
due while the publisher was held up (by the collector, by the machine) is
published as soon as it can be, and the publisher's worst lateness is
reported as ``late``. Each case also reports the garbage collector's work
during the run, seen through ``gc.callbacks`` (observed only: no benchmark
tunes the collector): how many full (generation 2) collections ran, the
longest of them, and the longest young (generation 0 or 1) collection, in
CPU time of the thread (``time.thread_time_ns``), which a busy machine taking
the core away does not lengthen.

Targets (issue 23, DESIGN.md section 3), the floor of the same round:
p99 at most 3 x the floor's, p99.9 at most 3 x the floor's, and the maximum
at most 5 ms, or 2 x the floor's where the machine's own floor is worse.

    python benchmarks/latency.py                  # 3 rounds of 10 s per case, a few minutes
    python benchmarks/latency.py --quick          # 1 round of 2 s, for CI
    python benchmarks/latency.py --backend trio   # the same on trio
    python benchmarks/latency.py --chart docs/assets/latency.svg
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
from _chart import bar_chart

from eventbus import Event, EventBus
from eventbus.store import DEFAULT_MAX_RECORDS

RATE = 10_000
SECONDS = 10.0
QUICK_SECONDS = 2.0
ROUNDS = 3
SQLITE_PUBLISHERS = 16
PREFILL_BATCH = 1_000
CASES = ["floor", "eventbus", "eventbus-sqlite"]
P99_TIMES_FLOOR = 3.0
P999_TIMES_FLOOR = 3.0
MAX_NS = 5_000_000
MAX_TIMES_FLOOR = 2.0
_NS_PER_US = 1_000


class Tick(Event, name="bench.latency.tick"):
    n: int


@dataclass
class Clocks:
    """When each event was published and how long it took to be handled, in ns: arrays of ints,
    which the collector never walks (a list of ints would be one more object per event for it)."""

    sent: array[int]
    latency: array[int]

    @classmethod
    def of(cls, n: int) -> Clocks:
        return cls(array("q", bytes(8 * n)), array("q", bytes(8 * n)))

    def handler(self) -> Callable[[Tick], Awaitable[None]]:
        sent, latency, now = self.sent, self.latency, time.perf_counter_ns

        async def handle(event: Tick) -> None:
            n = event.n
            if n >= 0:  # prefilled history is not measured
                latency[n] = now() - sent[n]

        return handle


class CollectorWatch:
    """What the collector did between `start` and `stop`, seen through ``gc.callbacks`` (in CPU time)."""

    def __init__(self) -> None:
        self.full_ns: list[int] = []
        self.longest_ns = [0, 0, 0]
        """The longest collection of each generation."""
        self._began = 0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.thread_time_ns()
            return
        took = time.thread_time_ns() - self._began
        generation = info["generation"]
        self.longest_ns[generation] = max(self.longest_ns[generation], took)
        if generation == 2:
            self.full_ns.append(took)

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


async def paced(publishers: int, n: int, clocks: Clocks, publish: Callable[[Tick], Awaitable[Any]]) -> int:
    """Publish events 0 .. n-1 at `RATE`, shared among ``publishers`` tasks; the worst lateness, in ns."""
    interval = 1_000_000_000 / RATE
    now, checkpoint, sent = time.perf_counter_ns, anyio.lowlevel.checkpoint, clocks.sent
    start = now()
    late = 0

    async def publisher(first: int) -> None:
        nonlocal late
        for i in range(first, n, publishers):
            due = start + int(i * interval)
            while now() < due:
                await checkpoint()
            event = Tick(n=i)
            at = sent[i] = now()
            late = max(late, at - due)
            await publish(event)
            await checkpoint()  # as a service publishing between awaits does

    async with anyio.create_task_group() as group:
        for first in range(publishers):
            group.start_soon(publisher, first)
    return late


async def run_floor(n: int, clocks: Clocks, watch: CollectorWatch) -> int:
    handle = clocks.handler()
    send, receive = anyio.create_memory_object_stream[Tick](max_buffer_size=10_000)

    async def consume() -> None:
        async with receive:
            async for event in receive:
                await handle(event)

    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        async with send:
            watch.start()
            late = await paced(1, n, clocks, send.send)
        watch.stop()
    return late


async def run_eventbus(n: int, clocks: Clocks, watch: CollectorWatch, store: str | None, publishers: int) -> int:
    bus = EventBus() if store is None else EventBus(store=store)
    bus.subscribe(Tick, clocks.handler(), name="handler")
    async with bus:
        if store is None:
            for _ in range(0, DEFAULT_MAX_RECORDS, PREFILL_BATCH):
                await bus.publish_many([Tick(n=-1) for _ in range(PREFILL_BATCH)])
            await bus.drain()
        watch.start()
        late = await paced(publishers, n, clocks, bus.publish)
        await bus.drain()
        watch.stop()
    return late


def child(case: str, seconds: float, backend: str) -> dict[str, Any]:
    """One measured case, in this process: its latency percentiles and the collector's work, as JSON data."""
    n = int(RATE * seconds)
    clocks = Clocks.of(n)
    watch = CollectorWatch()
    with tempfile.TemporaryDirectory() as directory:
        if case == "floor":
            late = anyio.run(run_floor, n, clocks, watch, backend=backend)
        elif case == "eventbus":
            late = anyio.run(run_eventbus, n, clocks, watch, None, 1, backend=backend)
        else:
            url = f"sqlite:///{Path(directory) / 'latency.db'}?synchronous=normal"
            late = anyio.run(run_eventbus, n, clocks, watch, url, SQLITE_PUBLISHERS, backend=backend)
    ordered = sorted(clocks.latency)
    if ordered[0] <= 0:
        raise RuntimeError(f"{case}: an event was not handled")

    def at(fraction: float) -> int:
        return ordered[min(n - 1, int(fraction * n))]

    return {
        "p50": at(0.5),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": ordered[-1],
        "late": late,
        "full_collections": len(watch.full_ns),
        "longest_full": max(watch.full_ns, default=0),
        "longest_young": max(watch.longest_ns[:2]),
    }


def measure(case: str, seconds: float, backend: str) -> dict[str, Any]:
    """Run ``case`` in a process of its own; its figures."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", case, "--seconds", str(seconds), "--backend", backend],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def us(ns: float) -> str:
    return f"{ns / _NS_PER_US:,.0f}"


def report(rounds: list[dict[str, dict[str, Any]]]) -> str:
    """One line per case and round, then each eventbus case against the floor of its round."""
    header = (
        f"{'round':<7}{'case':<17}{'p50 µs':>9}{'p99 µs':>9}{'p99.9 µs':>10}{'max µs':>10}{'late ms':>10}"
        f"{'full gc':>9}{'full cpu ms':>13}{'young cpu ms':>14}"
    )
    lines = [header, "-" * len(header)]
    for index, results in enumerate(rounds, 1):
        for case, r in results.items():
            lines.append(
                f"{index:<7}{case:<17}{us(r['p50']):>9}{us(r['p99']):>9}{us(r['p999']):>10}{us(r['max']):>10}"
                f"{r['late'] / 1e6:>10,.1f}{r['full_collections']:>9}{r['longest_full'] / 1e6:>13.1f}"
                f"{r['longest_young'] / 1e6:>14.1f}"
            )
    lines.append("")
    lines.append("against the floor of the same round (target: p99 and p99.9 at most 3 x; max at most 5 ms or 2 x)")
    for index, results in enumerate(rounds, 1):
        floor = results["floor"]
        for case in (c for c in results if c != "floor"):
            r = results[case]
            max_bound = max(MAX_NS, MAX_TIMES_FLOOR * floor["max"])
            met = (
                r["p99"] <= P99_TIMES_FLOOR * floor["p99"]
                and r["p999"] <= P999_TIMES_FLOOR * floor["p999"]
                and r["max"] <= max_bound
            )
            own = "" if case == "eventbus" else "   (its own tail: the disk is in it)"
            p99, p999 = r["p99"] / floor["p99"], r["p999"] / floor["p999"]
            lines.append(
                f"  round {index} {case:<16} p99 {p99:5.1f} x   p99.9 {p999:5.1f} x"
                f"   max {us(r['max'])} µs of {us(max_bound)} allowed   {'met' if met else 'not met'}{own}"
            )
    return "\n".join(lines)


def chart(rounds: list[dict[str, dict[str, Any]]], path: Path) -> None:
    """p50, p99, p99.9 and max of the floor and the default bus, each the worst of its rounds."""
    bars = []
    for case, label in (("floor", "floor: memory stream + task"), ("eventbus", "eventbus: EventBus()")):
        for key, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")):
            bars.append((f"{label}, {name}", max(r[case][key] for r in rounds) / _NS_PER_US))
    bar_chart(f"Publish-to-handled latency at {RATE:,} events/s (worst of {len(rounds)} rounds)", "µs", bars, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"one round of {QUICK_SECONDS:g} s per case (CI)")
    parser.add_argument("--seconds", type=float, help=f"paced seconds per case (default {SECONDS:g})")
    parser.add_argument("--rounds", type=int, help=f"interleaved rounds (default {ROUNDS})")
    parser.add_argument("--case", action="append", choices=CASES[1:], help="only this case beside the floor")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--chart", type=Path, metavar="SVG", help="write a bar chart of the floor and the default bus")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    if args.child:
        print(json.dumps(child(args.child, seconds, args.backend)))
        return
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    cases = ["floor", *(args.case or CASES[1:])]
    print(
        f"publish-to-handled latency, paced at {RATE:,} events/s for {seconds:g} s per case, {args.backend}, "
        f"{rounds} interleaved round(s), each case in a process of its own\n"
    )
    results = [{case: measure(case, seconds, args.backend) for case in cases} for _ in range(rounds)]
    print(report(results))
    if args.chart is not None:
        chart(results, args.chart)
        print(f"\nchart written to {args.chart}")


if __name__ == "__main__":
    main()
