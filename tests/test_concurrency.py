"""Concurrent workers: ``concurrency=n`` runs up to n handler calls at once,
``key=`` keeps the events of one key in order, and the subscription's
position only moves past events that are all finished."""

from __future__ import annotations

from collections import defaultdict

import anyio
import anyio.lowlevel
import pytest

from eventbus import EventBus
from tests.policy_events import WAIT, Hold, Seen, Tick, assert_all_accounted, publish_ticks


async def test_concurrency_runs_n_handler_calls_at_once() -> None:
    workers = 4
    all_inside = anyio.Event()
    inside = 0
    async with EventBus() as bus:

        @bus.subscribe(name="parallel", concurrency=workers)
        async def parallel(event: Tick) -> None:
            nonlocal inside
            inside += 1
            if inside == workers:
                all_inside.set()
            # a single worker would wait here forever: every call needs the others inside
            await all_inside.wait()

        await publish_ticks(bus, range(workers))
        await bus.drain(WAIT)
        stats = bus.stats()["parallel"]

    assert (stats.delivered, stats.pending) == (workers, 0)


async def test_concurrency_never_runs_more_than_n_calls_at_once() -> None:
    hold = Hold()
    async with EventBus() as bus:

        @bus.subscribe(name="capped", concurrency=3)
        async def capped(event: Tick) -> None:
            await hold.wait()

        await publish_ticks(bus, range(10))
        await anyio.wait_all_tasks_blocked()
        inside_at_most = hold.inside
        hold.release()
        await bus.drain(WAIT)

    assert inside_at_most == 3
    assert hold.calls == 10


async def test_concurrency_8_with_key_keeps_per_key_order_while_handlers_overlap() -> None:
    keys = [f"k{i}" for i in range(6)]
    total = 600
    order: dict[str, list[int]] = defaultdict(list)
    in_flight = 0
    max_in_flight = 0
    busy_keys: set[str] = set()
    overlapping_key_calls = 0

    async with EventBus() as bus:

        @bus.subscribe(name="keyed", concurrency=8, key=lambda event: event.key)
        async def keyed(event: Tick) -> None:
            nonlocal in_flight, max_in_flight, overlapping_key_calls
            if event.key in busy_keys:
                overlapping_key_calls += 1
            busy_keys.add(event.key)
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            # a varying number of yields, so calls finish out of publish order
            for _ in range(event.n % 5):
                await anyio.lowlevel.checkpoint()
            order[event.key].append(event.n)
            in_flight -= 1
            busy_keys.discard(event.key)

        for n in range(total):
            await bus.publish(Tick(n=n, key=keys[n * 7 % len(keys)]))
        await bus.drain(WAIT)
        stats = bus.stats()["keyed"]

    assert max_in_flight > 1, "the handlers never overlapped"
    assert max_in_flight <= 8
    assert overlapping_key_calls == 0, "two events of one key were handled at the same time"
    for key in keys:
        published = [n for n in range(total) if keys[n * 7 % len(keys)] == key]
        assert order[key] == published, key
    assert (stats.delivered, stats.pending, stats.position) == (total, 0, total)


async def test_without_key_concurrent_calls_finish_out_of_order_but_all_are_delivered() -> None:
    finished: list[int] = []
    async with EventBus() as bus:

        @bus.subscribe(name="unordered", concurrency=4)
        async def unordered(event: Tick) -> None:
            for _ in range((10 - event.n % 10) * 2):
                await anyio.lowlevel.checkpoint()
            finished.append(event.n)

        await publish_ticks(bus, range(40))
        await bus.drain(WAIT)

    assert finished != sorted(finished)
    assert sorted(finished) == list(range(40))


async def test_position_stays_below_an_unfinished_event_under_concurrency() -> None:
    hold = Hold()
    seen = Seen()
    async with EventBus() as bus:

        @bus.subscribe(name="gapped", concurrency=4)
        async def gapped(event: Tick) -> None:
            if event.n == 2:
                await hold.wait()
            seen.add(event)

        await publish_ticks(bus, range(1, 6))
        with anyio.fail_after(WAIT):
            await hold.entered.wait()
        await anyio.wait_all_tasks_blocked()
        during = bus.stats()["gapped"]
        hold.release()
        await bus.drain(WAIT)
        after = bus.stats()["gapped"]

    assert sorted(seen.ns[:4]) == [1, 3, 4, 5]
    assert (during.delivered, during.pending, during.position) == (4, 1, 1)
    assert (after.delivered, after.pending, after.position) == (5, 0, 5)


async def test_a_key_function_that_raises_dead_letters_that_event_only() -> None:
    seen = Seen()

    def key_of(event: Tick) -> str:
        if event.n == 3:
            raise LookupError("no key for 3")
        return event.key

    async with EventBus() as bus:

        @bus.subscribe(name="badkey", concurrency=2, key=key_of)
        async def badkey(event: Tick) -> None:
            seen.add(event)

        await publish_ticks(bus, range(1, 6), key="a")
        await bus.drain(WAIT)
        letters = await bus.dead_letters.list("badkey")
        assert_all_accounted(bus)

    assert seen.ns == [1, 2, 4, 5]
    assert [(letter.record.seq, letter.error_type) for letter in letters] == [(3, "builtins.LookupError")]


@pytest.mark.parametrize("workers", [1, 3])
async def test_stats_add_up_with_failures_under_concurrency(workers: int) -> None:
    async with EventBus() as bus:

        @bus.subscribe(name="mixed", concurrency=workers)
        async def mixed(event: Tick) -> None:
            await anyio.lowlevel.checkpoint()
            if event.n % 4 == 0:
                raise ValueError(event.n)

        await publish_ticks(bus, range(1, 101))
        await bus.drain(WAIT)
        stats = bus.stats()["mixed"]
        assert_all_accounted(bus)

    assert (stats.routed, stats.delivered, stats.dead_lettered, stats.failed) == (100, 75, 25, 25)
