"""A bus the application drops is freed at once, with its store, by reference
counting: no reference cycle keeps it (and every record its `MemoryStore`
holds) in memory until the garbage collector's next full collection.

Each test runs with the collector off, so only reference counting can free
the bus; a cycle anywhere between the bus and its store fails it.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from core_events import WAIT, Ping, Pong

from eventbus import EventBus, MemoryStore, Record, Retry, Subscription
from eventbus._weak import weak_method

Scenario = Callable[[EventBus], Awaitable[None]]


@contextmanager
def reference_counting_only() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()  # what an earlier test left, so that a failure names only this test's cycles
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def cycles_holding(ref: weakref.ref[Any]) -> str:
    """What the collector finds unreachable, for the failure message."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        kinds = sorted({type(obj).__qualname__ for obj in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return f"{ref!r} outlived its bus, in a reference cycle among: {', '.join(kinds)}"


async def run_then_drop(scenario: Scenario, runs: int) -> tuple[weakref.ref[EventBus], weakref.ref[MemoryStore]]:
    """Run ``scenario`` on a new bus, started ``runs`` times, then drop the bus;
    weak references to it and its store."""
    store = MemoryStore()
    bus = EventBus(store)
    for _ in range(runs):
        async with bus:
            await scenario(bus)
    return weakref.ref(bus), weakref.ref(store)


async def assert_freed(scenario: Scenario, runs: int = 1) -> None:
    with reference_counting_only():
        bus, store = await run_then_drop(scenario, runs)
        assert bus() is None, cycles_holding(bus)
        assert store() is None, cycles_holding(store)


async def one_plain_handler(bus: EventBus) -> None:
    async def handler(event: Ping) -> None:
        pass

    if "plain" not in bus.subscriptions:
        bus.subscribe(Ping, handler, name="plain")
    for n in range(50):
        await bus.publish(Ping(n=n))
    await bus.drain(WAIT)
    assert bus.subscriptions["plain"].stats().delivered == 50


async def test_a_dropped_bus_and_its_store_are_freed_without_the_collector() -> None:
    await assert_freed(one_plain_handler)


async def test_a_bus_run_twice_is_freed_too() -> None:
    await assert_freed(one_plain_handler, runs=2)


async def test_a_bus_whose_handlers_failed_retried_and_published_is_freed() -> None:
    async def scenario(bus: EventBus) -> None:
        async def fails(event: Ping) -> None:
            raise ValueError(f"no {event.n}")

        publish = weakref.WeakMethod(bus.publish)  # a closure over the bus would be this test's own cycle

        async def answers(event: Ping, record: Record) -> None:
            answer = publish()
            assert answer is not None
            await answer(Pong(n=event.n), headers={"from": record.type})

        def sync(event: Pong) -> None:
            pass

        async def filtered(event: Ping) -> None:
            await anyio.lowlevel.checkpoint()

        bus.subscribe(Ping, fails, retry=Retry(attempts=2, backoff=0.0, jitter=0.0))
        bus.subscribe(Ping, answers)
        bus.subscribe(Pong, sync, in_thread=True)
        bus.subscribe(Ping, filtered, where=lambda event: event.n > 0)
        await bus.publish_many([Ping(n=n) for n in range(10)])
        await bus.drain(WAIT)
        assert len(await bus.dead_letters.list()) == 10
        assert bus.stats().published == 20

    await assert_freed(scenario)


async def test_a_bus_with_a_durable_subscription_reading_history_is_freed() -> None:
    async def scenario(bus: EventBus) -> None:
        for n in range(20):
            await bus.publish(Ping(n=n))

        async def handler(event: Ping) -> None:
            pass

        sub = bus.subscribe(Ping, handler, name="durable", durable=True, from_seq=1, max_pending=4)
        await bus.drain(WAIT)
        assert sub.stats().delivered == 20

    await assert_freed(scenario)


async def test_a_bus_with_concurrent_workers_is_freed() -> None:
    async def scenario(bus: EventBus) -> None:
        async def keyed(event: Ping) -> None:
            await anyio.lowlevel.checkpoint()

        async def durable(event: Ping) -> None:
            await anyio.lowlevel.checkpoint()

        if "keyed" not in bus.subscriptions:
            bus.subscribe(Ping, keyed, name="keyed", concurrency=4, key=lambda event: event.n % 3)
            bus.subscribe(Ping, durable, name="durable", durable=True, concurrency=2)
        for n in range(30):
            await bus.publish(Ping(n=n))
        await bus.drain(WAIT)
        assert bus.subscriptions["keyed"].stats().delivered == 30
        assert bus.subscriptions["durable"].stats().delivered == 30

    await assert_freed(scenario, runs=2)


async def test_a_subscription_kept_after_its_bus_was_freed_still_closes_and_reports() -> None:
    async def keep_subscription() -> tuple[Subscription, weakref.ref[EventBus]]:
        bus = EventBus()

        async def handler(event: Ping) -> None:
            pass

        sub = bus.subscribe(Ping, handler)
        async with bus:
            await bus.publish(Ping(n=1))
            await bus.drain(WAIT)
        return sub, weakref.ref(bus)

    with reference_counting_only():
        sub, bus = await keep_subscription()
        assert bus() is None, cycles_holding(bus)
        sub.close()
        assert sub.closed
        assert sub.stats().delivered == 1


async def test_dead_letters_kept_after_their_bus_was_freed_say_so() -> None:
    async def keep_dead_letters() -> Any:
        bus = EventBus()
        return bus.dead_letters

    with reference_counting_only():
        dead_letters = await keep_dead_letters()
        with pytest.raises(ReferenceError, match="_current_store"):
            await dead_letters.list()


class Owner:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def note(self, n: int) -> int:
        self.calls.append(n)
        return n * 2


def test_weak_method_calls_the_method_while_its_object_lives() -> None:
    owner = Owner()
    note = weak_method(owner.note)
    assert note(3) == 6
    assert owner.calls == [3]


def test_weak_method_does_not_keep_its_object_alive() -> None:
    with reference_counting_only():
        owner = Owner()
        freed = weakref.ref(owner)
        note = weak_method(owner.note)
        del owner
        assert freed() is None
        with pytest.raises(ReferenceError, match=r"Owner\.note\(\) was called after its object was freed"):
            note(1)


def test_weak_method_runs_gone_once_its_object_is_freed() -> None:
    owner = Owner()
    note = weak_method(owner.note, gone=lambda n: -n)
    del owner
    assert note(4) == -4
