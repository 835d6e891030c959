"""Publish-to-handled throughput of eventbus beside its peers and the raw-Python floor.

Every figure is measured in the same run, on asyncio, with pre-built events
and async handlers that only count. The *floor* is the least any in-process
bus can do: a dict from type to handlers, each awaited directly. Ratios are
``eventbus / other``: above 1.0 means eventbus is faster.

    python benchmarks/throughput.py            # full run: best of 3 rounds (a minute or two)
    python benchmarks/throughput.py --quick    # small counts, for CI

Scenarios (DESIGN.md section 3 states the targets):
- single: one async handler, ``publish`` per event, MemoryStore.
- batch: the same through ``publish_many`` in batches of 1 000.
- routing: one matching handler among 1 000 subscriptions of other types.
- fanout: ten handlers of one type (deliveries/s).
- policies: one handler with ``retry=Retry()`` and ``concurrency=4``.
- peers: pyee, blinker and bubus doing the single-handler case.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import blinker
import bubus
import pyee.asyncio
from _logs import quiet_logs

from eventbus import Event, EventBus, Retry

Result = tuple[str, float, str]  # (scenario, per second, unit)
BUBUS_WINDOW = 50
# Each scenario runs once per round and keeps its best round (timeit's advice:
# the fastest run is the one least disturbed by the rest of the machine), and
# rounds interleave the scenarios so that a busy spell does not land on one.
ROUNDS = 3
ROUNDS_QUICK = 2


class Tick(Event, name="bench.tick"):
    n: int


class TickPeer(bubus.BaseEvent[None]):
    n: int


def _other_types(count: int) -> list[type[Event]]:
    return [type(f"Other{i}", (Event,), {"__module__": __name__}, name=f"bench.other.{i}") for i in range(count)]


async def _timed(run: Callable[[], Awaitable[None]]) -> float:
    gc.collect()
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


async def floor(n: int, handlers_per_type: int = 1) -> float:
    """Raw Python: a dict by type, awaiting each handler directly."""
    counter = 0

    async def handler(event: Tick) -> None:
        nonlocal counter
        counter += 1

    table: dict[type, list[Callable[[Tick], Awaitable[None]]]] = {Tick: [handler] * handlers_per_type}
    events = [Tick(n=i) for i in range(n)]

    async def run() -> None:
        for event in events:
            for handle in table[type(event)]:
                await handle(event)

    elapsed = await _timed(run)
    assert counter == n * handlers_per_type
    return n * handlers_per_type / elapsed


async def eventbus_run(
    n: int,
    *,
    handlers: int = 1,
    others: int = 0,
    batch: int = 0,
    options: dict[str, Any] | None = None,
) -> float:
    bus = EventBus()
    counter = 0

    async def handler(event: Tick) -> None:
        nonlocal counter
        counter += 1

    for i in range(handlers):
        bus.subscribe(Tick, handler, name=f"h{i}", **(options or {}))
    for i, cls in enumerate(_other_types(others)):
        bus.subscribe(cls, handler, name=f"other{i}")
    events = [Tick(n=i) for i in range(n)]

    async def run() -> None:
        if batch:
            for start in range(0, n, batch):
                await bus.publish_many(events[start : start + batch])
        else:
            publish = bus.publish
            for event in events:
                await publish(event)
        await bus.drain()

    async with bus:
        elapsed = await _timed(run)
    assert counter == n * handlers, (counter, n * handlers)
    return n * handlers / elapsed


async def pyee_run(n: int) -> float:
    emitter = pyee.asyncio.AsyncIOEventEmitter()
    counter = 0
    done = asyncio.Event()

    async def handler(event: Tick) -> None:
        nonlocal counter
        counter += 1
        if counter == n:
            done.set()

    emitter.on("tick", handler)
    events = [Tick(n=i) for i in range(n)]

    async def run() -> None:
        for event in events:
            emitter.emit("tick", event)
        await done.wait()

    elapsed = await _timed(run)
    return n / elapsed


async def blinker_run(n: int) -> float:
    signal = blinker.Signal()
    counter = 0

    async def handler(sender: Any, event: Tick) -> None:
        nonlocal counter
        counter += 1

    signal.connect(handler)
    events = [Tick(n=i) for i in range(n)]

    async def run() -> None:
        for event in events:
            await signal.send_async(None, event=event)

    elapsed = await _timed(run)
    assert counter == n
    return n / elapsed


async def bubus_run(n: int) -> float:
    bus = bubus.EventBus(max_history_size=n + 1)
    counter = 0

    async def handler(event: TickPeer) -> None:
        nonlocal counter
        counter += 1

    bus.on(TickPeer, handler)
    events = [TickPeer(n=i) for i in range(n)]

    async def run() -> None:
        # bubus refuses a dispatch past 100 pending events, so feed it in windows it accepts.
        for start in range(0, n, BUBUS_WINDOW):
            for event in events[start : start + BUBUS_WINDOW]:
                bus.dispatch(event)
            await bus.wait_until_idle()

    elapsed = await _timed(run)
    await bus.stop()
    assert counter == n, counter
    return n / elapsed


async def main(quick: bool) -> list[Result]:
    n = 20_000 if quick else 300_000
    peer_n = 5_000 if quick else 50_000
    # bubus slows down as its history grows (about 240 events/s at 200 events, 50/s at 2 000),
    # so it gets a short run: a longer one would only make it look worse.
    bubus_n = 200 if quick else 500
    rounds = ROUNDS_QUICK if quick else ROUNDS
    # (label, unit, run); every round runs each scenario once, in this order
    scenarios: list[tuple[str, str, Callable[[], Awaitable[float]]]] = [
        ("floor: dict-by-type loop, 1 handler", "events/s", lambda: floor(n)),
        ("eventbus: 1 async handler, publish()", "events/s", lambda: eventbus_run(n)),
        ("eventbus: 1 async handler, publish_many(1000)", "events/s", lambda: eventbus_run(n, batch=1_000)),
        ("eventbus: 1 of 1 001 subscriptions matches", "events/s", lambda: eventbus_run(n, others=1_000)),
        (
            "eventbus: retry=Retry(), concurrency=4",
            "events/s",
            lambda: eventbus_run(n, options={"retry": Retry(), "concurrency": 4}),
        ),
        ("floor: 10 handlers", "deliveries/s", lambda: floor(n, handlers_per_type=10)),
        ("eventbus: fan-out to 10 handlers", "deliveries/s", lambda: eventbus_run(n, handlers=10)),
        ("peer: pyee (AsyncIOEventEmitter)", "events/s", lambda: pyee_run(peer_n)),
        ("peer: blinker (send_async)", "events/s", lambda: blinker_run(peer_n)),
        ("peer: bubus (dispatch + wait_until_idle)", "events/s", lambda: bubus_run(bubus_n)),
    ]
    print(
        f"eventbus throughput benchmark ({n:,} events per eventbus case; asyncio; "
        f"best of {rounds} interleaved rounds)\n"
    )
    best: dict[str, float] = {}
    for _ in range(rounds):
        for label, _unit, run in scenarios:
            best[label] = max(best.get(label, 0.0), await run())
    results: list[Result] = [(label, best[label], unit) for label, unit, _run in scenarios]
    for label, rate, unit in results:
        print(f"{label:<44}{rate:>14,.0f} {unit}")

    rates = [rate for _label, rate, _unit in results]
    base_floor, single, batch, routing, policies, fan_floor, fanout = rates[:7]
    peers = {label.removeprefix("peer: "): rate for label, rate, _unit in results[7:]}
    print("\nratios (eventbus / other; above 1.0 = eventbus faster)")
    print(f"  single vs floor:            {single / base_floor:6.2f}   (target: 1 000 000 events/s)")
    print(f"  batch vs floor:             {batch / base_floor:6.2f}")
    print(f"  routing vs single:          {routing / single:6.2f}   (target: >= 0.90)")
    print(f"  retry+concurrency vs single:{policies / single:6.2f}   (target: >= 0.80)")
    print(f"  fan-out vs floor:           {fanout / fan_floor:6.2f}   (target: 3 000 000 deliveries/s)")
    for name, rate in peers.items():
        print(f"  single vs {name:<28}{single / rate:8.2f}")
    return results


if __name__ == "__main__":
    quiet_logs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts (CI)")
    asyncio.run(main(parser.parse_args().quick))
