"""Graceful shutdown: leaving ``async with bus`` drains by default; with
``shutdown_timeout=`` what is still running at the deadline is cancelled and,
never marked done, delivered again to a durable subscription after restart."""

from __future__ import annotations

import anyio
from structlog.testing import capture_logs

from eventbus import EventBus, MemoryStore
from tests.policy_events import WAIT, Hold, Seen, Tick, accounted, log_events, publish_ticks

SHORT = 0.05
"""A shutdown timeout that a held handler is sure to outlast."""


async def test_leaving_async_with_waits_for_in_flight_and_queued_deliveries() -> None:
    hold = Hold()
    seen = Seen()
    cancelled = False
    closed = anyio.Event()
    bus = EventBus()

    @bus.subscribe(name="patient")
    async def patient(event: Tick) -> None:
        nonlocal cancelled
        if event.n == 1:
            try:
                await hold.wait()
            except anyio.get_cancelled_exc_class():
                cancelled = True
                raise
        seen.add(event)

    async def run_bus() -> None:
        async with bus:
            await publish_ticks(bus, range(1, 6))
            await hold.entered.wait()
        closed.set()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_bus)
            await hold.entered.wait()
            await anyio.wait_all_tasks_blocked()
            assert not closed.is_set(), "the bus closed under a running handler"
            assert seen.ns == []
            hold.release()

    assert closed.is_set()
    assert not cancelled
    assert seen.ns == [1, 2, 3, 4, 5]
    assert not bus.running


async def test_in_flight_handlers_that_finish_within_the_shutdown_timeout_are_not_cancelled() -> None:
    hold = Hold()
    finished: list[int] = []
    bus = EventBus(shutdown_timeout=WAIT)

    @bus.subscribe(name="workers", concurrency=3)
    async def workers(event: Tick) -> None:
        await hold.wait()
        finished.append(event.n)

    async def release_while_closing() -> None:
        await anyio.wait_all_tasks_blocked()
        hold.release()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg, bus:
            await publish_ticks(bus, range(1, 4))
            await anyio.wait_all_tasks_blocked()
            assert hold.inside == 3
            # runs once leaving the block below has started to drain
            tg.start_soon(release_while_closing)

    assert sorted(finished) == [1, 2, 3]


async def test_past_the_shutdown_timeout_unfinished_deliveries_are_cancelled_and_logged() -> None:
    hold = Hold()
    cancelled = anyio.Event()
    seen = Seen()
    with capture_logs() as logs, anyio.fail_after(WAIT):
        async with EventBus(shutdown_timeout=SHORT) as bus:

            @bus.subscribe(name="hung")
            async def hung(event: Tick) -> None:
                if event.n == 2:
                    try:
                        await hold.wait()  # never released
                    except anyio.get_cancelled_exc_class():
                        cancelled.set()
                        raise
                seen.add(event)

            await publish_ticks(bus, range(1, 6))
            await hold.entered.wait()
    stats = bus.stats()["hung"]

    assert cancelled.is_set()
    assert seen.ns == [1], "nothing behind the stuck handler runs after the deadline"
    assert (stats.routed, stats.delivered, stats.pending, stats.position) == (5, 1, 4, 1)
    assert accounted(stats)
    [warning] = log_events(logs, "shutdown timeout reached, cancelling unfinished deliveries")
    assert warning["log_level"] == "warning"
    assert warning["timeout"] == SHORT
    assert warning["pending"] == {"hung": 4}


async def test_a_cancelled_delivery_is_never_marked_done_and_a_durable_subscription_sees_it_again() -> None:
    store = MemoryStore()
    hold = Hold()
    first_run = Seen()
    first = EventBus(store, shutdown_timeout=SHORT)

    @first.subscribe(name="ledger", durable=True)
    async def ledger_first(event: Tick) -> None:
        if event.n == 4:
            await hold.wait()  # still running when the bus stops
        first_run.add(event)

    with anyio.fail_after(WAIT):
        async with first:
            await publish_ticks(first, range(1, 7))
            await hold.entered.wait()

    assert first_run.ns == [1, 2, 3]
    assert await store.load_checkpoint("ledger") == 3

    second_run = Seen()
    second = EventBus(store)

    @second.subscribe(name="ledger", durable=True)
    async def ledger_second(event: Tick) -> None:
        second_run.add(event)

    async with second:
        await second.drain(WAIT)

    assert second_run.ns == [4, 5, 6]
    assert await store.load_checkpoint("ledger") == 6


async def test_under_concurrency_the_saved_position_stops_below_the_cancelled_delivery() -> None:
    store = MemoryStore()
    hold = Hold()
    first_run: list[int] = []
    first = EventBus(store, shutdown_timeout=SHORT)

    @first.subscribe(name="parallel_ledger", durable=True, concurrency=3)
    async def parallel_first(event: Tick) -> None:
        if event.n == 2:
            await hold.wait()
        first_run.append(event.n)

    with anyio.fail_after(WAIT):
        async with first:
            await publish_ticks(first, range(1, 6))
            await hold.entered.wait()

    assert sorted(first_run) == [1, 3, 4, 5]
    assert await store.load_checkpoint("parallel_ledger") == 1

    second_run = Seen()
    second = EventBus(store)

    @second.subscribe(name="parallel_ledger", durable=True)
    async def parallel_second(event: Tick) -> None:
        second_run.add(event)

    async with second:
        await second.drain(WAIT)

    # at least once: 2 was never finished, and 3-5 lie past the saved position
    assert second_run.ns == [2, 3, 4, 5]


async def test_a_bus_without_a_shutdown_timeout_waits_for_the_last_delivery() -> None:
    hold = Hold()
    seen = Seen()
    bus = EventBus(shutdown_timeout=None)

    @bus.subscribe(name="unbounded")
    async def unbounded(event: Tick) -> None:
        await hold.wait()
        seen.add(event)

    async def release_while_closing() -> None:
        await anyio.wait_all_tasks_blocked()
        hold.release()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg, bus:
            await bus.publish(Tick(n=1))
            await hold.entered.wait()
            tg.start_soon(release_while_closing)

    assert seen.ns == [1]
