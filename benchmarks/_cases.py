"""The publish-to-handled cases, shared by the timed and the instruction-count benchmarks.

Each case is an async function ``run(events, clock)`` that sets up its bus,
delivers the pre-built ``events`` to async handlers that only count, and
returns how many deliveries the handlers saw. Only the part inside
``with clock:`` is the measured work: `throughput.py` passes a `Stopwatch`,
`instructions.py` a `NoClock` (callgrind counts the whole process and the
per-event arithmetic removes the rest). The same code is measured both ways.

Peers are imported inside their case, so that a run of one case loads only
what it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from eventbus import Event, EventBus, Retry

BUBUS_WINDOW = 50
"""bubus refuses a dispatch past 100 pending events, so it is fed in windows it accepts."""


class Tick(Event, name="bench.tick"):
    n: int


class Clock(Protocol):
    def __enter__(self) -> object: ...
    def __exit__(self, *exc: object) -> None: ...


class NoClock:
    """A clock that measures nothing (the instruction count covers the whole process)."""

    def __enter__(self) -> NoClock:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class Stopwatch:
    """Wall-clock seconds spent inside ``with stopwatch:``, after a full collection."""

    elapsed = 0.0

    def __enter__(self) -> Stopwatch:
        gc.collect()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self._started


@contextlib.contextmanager
def structlog_at_warning() -> Iterator[None]:
    """Inside: structlog configured to drop everything below warning, as a quiet application would."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        yield
    finally:
        structlog.reset_defaults()


def ticks(n: int) -> list[Any]:
    return [Tick(n=i) for i in range(n)]


def bubus_ticks(n: int) -> list[Any]:
    tick = _bubus_tick()
    return [tick(n=i) for i in range(n)]


@functools.cache
def _bubus_tick() -> type[Any]:
    import bubus

    class BubusTick(bubus.BaseEvent[None]):
        n: int

    return BubusTick


async def floor(events: list[Any], clock: Clock, handlers: int = 1, paced: bool = False) -> int:
    """Raw Python: a dict by type, awaiting each handler directly (``paced``:
    yielding to the event loop after each event, as the paced eventbus cases do)."""
    counter = 0

    async def handler(event: Tick) -> None:
        nonlocal counter
        counter += 1

    table: dict[type, list[Callable[[Tick], Awaitable[None]]]] = {Tick: [handler] * handlers}
    with clock:
        for event in events:
            for handle in table[type(event)]:
                await handle(event)
            if paced:
                await asyncio.sleep(0)
    return counter


async def eventbus_case(
    events: list[Any],
    clock: Clock,
    *,
    handlers: int = 1,
    others: int = 0,
    batch: int = 0,
    paced: bool = False,
    options: dict[str, Any] | None = None,
) -> int:
    """eventbus on its default `MemoryStore`: ``publish`` per event (or ``publish_many`` batches), then ``drain``.

    ``paced``: the publisher yields to the event loop after each publish, as an
    application publishing between awaits does, so every publish wakes the
    subscriptions' workers (in a tight loop they wake once per burst).
    """
    bus = EventBus()
    counter = 0

    async def handler(event: Tick) -> None:
        nonlocal counter
        counter += 1

    async def bystander(event: Event) -> None:
        """The handler of the subscriptions to other types: no event is published for them."""

    for i in range(handlers):
        bus.subscribe(Tick, handler, name=f"h{i}", **(options or {}))
    for i in range(others):
        other = type(f"Other{i}", (Event,), {"__module__": __name__}, name=f"bench.other.{i}")
        bus.subscribe(other, bystander, name=f"other{i}")
    async with bus:
        with clock:
            if batch:
                for start in range(0, len(events), batch):
                    await bus.publish_many(events[start : start + batch])
            elif paced:
                publish = bus.publish
                for event in events:
                    await publish(event)
                    await asyncio.sleep(0)
            else:
                publish = bus.publish
                for event in events:
                    await publish(event)
            await bus.drain()
    return counter


async def pyee_case(events: list[Any], clock: Clock) -> int:
    """pyee's `AsyncIOEventEmitter`: ``emit`` schedules a task per handler call."""
    import pyee.asyncio

    emitter = pyee.asyncio.AsyncIOEventEmitter()
    counter = 0
    done = asyncio.Event()

    async def handler(event: Tick) -> None:
        nonlocal counter
        counter += 1
        if counter == len(events):
            done.set()

    emitter.on("tick", handler)
    with clock:
        for event in events:
            emitter.emit("tick", event)
        if events:
            await done.wait()
    return counter


async def blinker_case(events: list[Any], clock: Clock) -> int:
    """blinker's ``Signal.send_async``: each receiver awaited inline in the sender's task."""
    import blinker

    signal = blinker.Signal()
    counter = 0

    async def handler(sender: Any, event: Tick) -> None:
        nonlocal counter
        counter += 1

    signal.connect(handler)
    with clock:
        for event in events:
            await signal.send_async(None, event=event)
    return counter


async def bubus_case(events: list[Any], clock: Clock) -> int:
    """bubus: ``dispatch`` in windows, ``wait_until_idle`` after each."""
    import bubus

    bus = bubus.EventBus(max_history_size=len(events) + 1)
    counter = 0

    async def handler(event: Any) -> None:
        nonlocal counter
        counter += 1

    bus.on(_bubus_tick(), handler)
    with clock:
        for start in range(0, len(events), BUBUS_WINDOW):
            for event in events[start : start + BUBUS_WINDOW]:
                bus.dispatch(event)
            await bus.wait_until_idle()
    await bus.stop()
    return counter


async def pyventus_case(events: list[Any], clock: Clock) -> int:
    """pyventus's ``AsyncIOEventEmitter``: ``emit`` runs each async callback as a background task."""
    from pyventus.events import AsyncIOEventEmitter, EventLinker

    class Linker(EventLinker):
        """A registry of this run's own, so runs do not share subscribers."""

    counter = 0
    done = asyncio.Event()

    async def handler(event: Tick) -> None:
        nonlocal counter
        counter += 1
        if counter == len(events):
            done.set()

    Linker.subscribe("tick", event_callback=handler)
    emitter = AsyncIOEventEmitter(event_linker=Linker, debug=False)
    with clock:
        for event in events:
            emitter.emit("tick", event)
        if events:
            await done.wait()
    return counter


@dataclass(frozen=True)
class Case:
    """One measured case: its label, how its events are built, how they are delivered."""

    key: str
    label: str
    run: Callable[[list[Any], Clock], Awaitable[int]]
    build: Callable[[int], list[Any]] = ticks
    handlers: int = 1
    quiet: bool = False
    """Whether structlog is configured to warnings around the run (as a quiet application would)."""

    async def measure(self, events: list[Any], clock: Clock) -> None:
        """Run the case over ``events``; fails when a handler call went missing."""
        with structlog_at_warning() if self.quiet else contextlib.nullcontext():
            delivered = await self.run(events, clock)
        assert delivered == len(events) * self.handlers, (self.key, delivered, len(events) * self.handlers)


def _with(run: Callable[..., Awaitable[int]], **options: Any) -> Callable[[list[Any], Clock], Awaitable[int]]:
    return functools.partial(run, **options)


CASES = {
    case.key: case
    for case in [
        Case("floor", "floor: dict-by-type loop, 1 handler", floor),
        Case("floor10", "floor: dict-by-type loop, 10 handlers", _with(floor, handlers=10), handlers=10),
        Case("eventbus", "eventbus: 1 handler, logging unconfigured", eventbus_case),
        Case("eventbus-quiet", "eventbus: 1 handler, structlog at warning", eventbus_case, quiet=True),
        Case("batch", "eventbus: 1 handler, publish_many(1000)", _with(eventbus_case, batch=1_000)),
        Case("routing", "eventbus: 1 of 1 001 subscriptions matches", _with(eventbus_case, others=1_000)),
        Case(
            "policies",
            "eventbus: retry=Retry(), concurrency=4",
            _with(eventbus_case, options={"retry": Retry(), "concurrency": 4}),
        ),
        Case("fanout", "eventbus: fan-out to 10, logging unconfigured", _with(eventbus_case, handlers=10), handlers=10),
        Case(
            "fanout-quiet",
            "eventbus: fan-out to 10, structlog at warning",
            _with(eventbus_case, handlers=10),
            handlers=10,
            quiet=True,
        ),
        Case("floor-paced", "floor: 1 handler, paced", _with(floor, paced=True)),
        Case("paced", "eventbus: 1 handler, paced", _with(eventbus_case, paced=True)),
        Case("floor10-paced", "floor: 10 handlers, paced", _with(floor, handlers=10, paced=True), handlers=10),
        Case(
            "fanout-paced",
            "eventbus: fan-out to 10, paced",
            _with(eventbus_case, handlers=10, paced=True),
            handlers=10,
        ),
        Case("pyee", "peer: pyee (AsyncIOEventEmitter)", pyee_case),
        Case("blinker", "peer: blinker (send_async)", blinker_case),
        Case("bubus", "peer: bubus (dispatch + wait_until_idle)", bubus_case, build=bubus_ticks),
        Case("pyventus", "peer: pyventus (AsyncIOEventEmitter)", pyventus_case),
    ]
}
"""Every case, by key."""
