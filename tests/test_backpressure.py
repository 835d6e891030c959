"""Backpressure: bounded per-subscription queues (``max_pending``) and what a
full one does under each policy (``block``, ``drop_oldest``, ``drop_newest``,
``spill``), with slow handlers held on an event the test controls."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from eventbus import Backpressure, BackpressureError, Event, EventBus
from tests.policy_events import WAIT, Hold, Seen, Tick, accounted, assert_all_accounted, log_events, n_of, publish_ticks

DROPPED = "subscription full, events dropped"


async def test_block_makes_publish_wait_for_room_then_delivers_everything() -> None:
    hold = Hold()
    seen = Seen()
    finished = anyio.Event()
    async with EventBus() as bus:

        @bus.subscribe(name="slow", max_pending=2, backpressure="block")
        async def slow(event: Tick) -> None:
            if event.n == 1:
                await hold.wait()
            seen.add(event)

        await bus.publish(Tick(n=1))
        with anyio.fail_after(WAIT):
            await hold.entered.wait()
        await publish_ticks(bus, [2, 3])  # fills the queue

        async def publish_fourth() -> None:
            await bus.publish(Tick(n=4))
            finished.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_fourth)
            await anyio.wait_all_tasks_blocked()
            assert not finished.is_set(), "publish went through although the queue was full"
            assert bus.head == 3, "the waiting event must not be stored yet"
            assert bus.stats()["slow"].pending == 3
            hold.release()
        await bus.drain(WAIT)
        stats = bus.stats()["slow"]

    assert seen.ns == [1, 2, 3, 4]
    assert (stats.routed, stats.delivered, stats.dropped, stats.pending) == (4, 4, 0, 0)


async def test_block_with_publish_timeout_raises_backpressure_error_and_stores_nothing() -> None:
    hold = Hold()
    seen = Seen()
    async with EventBus(publish_timeout=0.05) as bus:

        @bus.subscribe(name="stuck", max_pending=2, backpressure="block")
        async def stuck(event: Tick) -> None:
            if event.n == 1:
                await hold.wait()
            seen.add(event)

        await bus.publish(Tick(n=1))
        with anyio.fail_after(WAIT):
            await hold.entered.wait()
        await publish_ticks(bus, [2, 3])
        with pytest.raises(BackpressureError, match="stuck"):
            await bus.publish(Tick(n=99))
        with pytest.raises(BackpressureError, match="stuck"):
            await bus.publish_many([Tick(n=98), Tick(n=97)])
        assert bus.head == 3
        assert bus.stats()["stuck"].routed == 3
        assert_all_accounted(bus)

        hold.release()
        await bus.drain(WAIT)
        await bus.publish(Tick(n=4))  # room again: no error
        await bus.drain(WAIT)
        stored = [n_of(record) async for record in bus.replay()]

    assert stored == [1, 2, 3, 4]
    assert seen.ns == [1, 2, 3, 4]


async def test_block_on_one_subscription_does_not_drop_for_another() -> None:
    hold = Hold()
    fast = Seen()
    async with EventBus(publish_timeout=0.05) as bus:

        @bus.subscribe(name="blocker", max_pending=1)
        async def blocker(event: Tick) -> None:
            await hold.wait()

        @bus.subscribe(name="fast")
        async def fast_handler(event: Tick) -> None:
            fast.add(event)

        await bus.publish(Tick(n=1))
        with anyio.fail_after(WAIT):
            await hold.entered.wait()
        await bus.publish(Tick(n=2))
        with pytest.raises(BackpressureError):
            await bus.publish(Tick(n=3))
        hold.release()
        await bus.drain(WAIT)

    # the refused event reached nobody: it was never stored
    assert fast.ns == [1, 2]


class Tock(Event, name="policy.backpressure.tock"):
    n: int


class Other(Event, name="policy.backpressure.other"):
    n: int


async def test_block_holds_back_every_type_routed_to_a_full_subscription_and_no_other() -> None:
    hold = Hold()
    others: list[int] = []
    all_others = anyio.Event()
    async with EventBus(publish_timeout=0.05) as bus:

        @bus.subscribe(name="both", max_pending=2)
        async def both(event: Tick | Tock) -> None:
            await hold.wait()

        @bus.subscribe(name="other", max_pending=2)
        async def other(event: Other) -> None:
            others.append(event.n)
            if event.n == 11:
                all_others.set()

        await bus.publish(Tick(n=1))
        with anyio.fail_after(WAIT):
            await hold.entered.wait()
        await publish_ticks(bus, [2, 3])  # fills "both" through the Tick route
        with pytest.raises(BackpressureError, match="both"):
            await bus.publish(Tock(n=4))  # the same inbox, through another route
        with pytest.raises(BackpressureError, match="both"):
            await bus.publish(Tick(n=5))
        for n in range(6, 12):  # a full subscription holds back no one else (max_pending=2 here too)
            await bus.publish(Other(n=n))
            if n % 2:
                await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(WAIT):
            await all_others.wait()
        assert bus.stats()["both"].routed == 3
        hold.release()
        await bus.drain(WAIT)
        await bus.publish(Tock(n=12))  # room again
        await bus.drain(WAIT)
        stats = bus.stats()

    assert others == list(range(6, 12))
    assert (stats["both"].routed, stats["both"].delivered, stats["both"].overflowed) == (4, 4, 0)
    assert stats["other"].overflowed == 0


@pytest.mark.parametrize(
    ("policy", "delivered"),
    [
        pytest.param("drop_newest", [1, 2, 3, 4], id="drop_newest"),
        pytest.param("drop_oldest", [1, 8, 9, 10], id="drop_oldest"),
    ],
)
async def test_drop_policies_keep_max_pending_events_and_count_and_log_every_drop(
    policy: Backpressure, delivered: list[int]
) -> None:
    hold = Hold()
    seen = Seen()
    with capture_logs() as logs:
        async with EventBus() as bus:

            @bus.subscribe(name="lossy", max_pending=3, backpressure=policy)
            async def lossy(event: Tick) -> None:
                if event.n == 1:
                    await hold.wait()
                seen.add(event)

            await bus.publish(Tick(n=1))
            with anyio.fail_after(WAIT):
                await hold.entered.wait()
            # 1 is in the handler, three fit in the queue, six are dropped; publish never waits
            with anyio.fail_after(WAIT):
                await publish_ticks(bus, range(2, 11))
            during = bus.stats()["lossy"]
            hold.release()
            await bus.drain(WAIT)
            after = bus.stats()["lossy"]

    assert seen.ns == delivered
    assert (during.routed, during.dropped, during.pending) == (10, 6, 4)
    assert (after.routed, after.delivered, after.dropped, after.pending) == (10, 4, 6, 0)
    assert accounted(during)
    assert accounted(after)
    drops = log_events(logs, DROPPED)
    assert drops, "drops were not logged"
    assert all(entry["log_level"] == "warning" for entry in drops)
    assert all(entry["subscription"] == "lossy" and entry["policy"] == policy for entry in drops)
    # the first drop is logged at once, the rest are summed up: every drop is in some entry
    assert sum(entry["dropped"] for entry in drops) == 6


async def test_drop_oldest_logs_the_seq_of_the_event_it_dropped() -> None:
    hold = Hold()
    with capture_logs() as logs:
        async with EventBus() as bus:

            @bus.subscribe(name="oldest", max_pending=1, backpressure="drop_oldest")
            async def oldest(event: Tick) -> None:
                if event.n == 1:
                    await hold.wait()

            await bus.publish(Tick(n=1))
            with anyio.fail_after(WAIT):
                await hold.entered.wait()
            await publish_ticks(bus, [2, 3])  # 2 queued, then dropped for 3
            first_drop = log_events(logs, DROPPED)
            hold.release()

    assert [(entry["seq"], entry["dropped"]) for entry in first_drop] == [(2, 1)]


async def test_spill_falls_behind_and_reads_back_from_the_store_losing_nothing() -> None:
    hold = Hold()
    seen = Seen()
    with capture_logs() as logs:
        async with EventBus() as bus:

            @bus.subscribe(name="spiller", max_pending=5, backpressure="spill")
            async def spiller(event: Tick) -> None:
                if event.n == 1:
                    await hold.wait()
                seen.add(event)

            await bus.publish(Tick(n=1))
            with anyio.fail_after(WAIT):
                await hold.entered.wait()
            with anyio.fail_after(WAIT):  # never waits for room
                await publish_ticks(bus, range(2, 51))
            during = bus.stats()["spiller"]
            hold.release()
            await bus.drain(WAIT)
            after = bus.stats()["spiller"]

    assert during.behind
    assert during.pending <= 5 + 1  # the queue plus the one in the handler
    assert accounted(during)
    assert seen.ns == list(range(1, 51))
    assert (after.routed, after.delivered, after.dropped, after.pending, after.behind) == (50, 50, 0, 0, False)
    assert log_events(logs, "subscription fell behind, reading back from the store")


async def test_spill_keeps_memory_bounded_by_max_pending_while_thousands_are_published() -> None:
    max_pending = 20
    total = 3_000
    hold = Hold()
    seen = Seen()
    in_handler = 0
    waiting: list[int] = []

    async with EventBus() as bus:

        def sample() -> None:
            # events the subscription keeps in memory, besides the one in its handler
            waiting.append(bus.stats()["bounded"].pending - in_handler)

        @bus.subscribe(name="bounded", max_pending=max_pending, backpressure="spill")
        async def bounded(event: Tick) -> None:
            nonlocal in_handler
            in_handler += 1
            sample()
            if event.n == 1:
                await hold.wait()
            await anyio.lowlevel.checkpoint()  # let the publisher in between deliveries
            seen.add(event)
            in_handler -= 1

        await bus.publish(Tick(n=1))
        with anyio.fail_after(WAIT):
            await hold.entered.wait()
        with anyio.fail_after(WAIT):
            # the handler is stuck: the first half goes by without it
            for n in range(2, total // 2):
                await bus.publish(Tick(n=n))
                sample()
            hold.release()
            # the second half is published while it catches up
            for n in range(total // 2, total + 1):
                await bus.publish(Tick(n=n))
                sample()
                if n % 7 == 0:
                    await anyio.lowlevel.checkpoint()
        await bus.drain(WAIT)
        stats = bus.stats()["bounded"]

    assert seen.ns == list(range(1, total + 1))
    assert max(waiting) <= max_pending, f"the subscription held up to {max(waiting)} events in memory"
    assert (stats.routed, stats.delivered, stats.dropped, stats.pending) == (total, total, 0, 0)


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "spill"])
async def test_a_stuck_subscription_does_not_slow_down_the_others(policy: Backpressure) -> None:
    total = 2_000
    stuck_hold = Hold()
    fast = Seen(until=total)
    async with EventBus() as bus:

        @bus.subscribe(name="stuck", max_pending=10, backpressure=policy)
        async def stuck(event: Tick) -> None:
            await stuck_hold.wait()  # never released

        @bus.subscribe(name="fast")
        async def fast_handler(event: Tick) -> None:
            fast.add(event)

        with anyio.fail_after(WAIT):
            await publish_ticks(bus, range(1, total + 1))
            await fast.reached.wait()
        stats = bus.stats()
        assert_all_accounted(bus)
        await bus.subscriptions["stuck"].aclose()

    assert fast.ns == list(range(1, total + 1))
    assert stats["fast"].delivered == total
    assert stuck_hold.calls <= 1
    assert stats["stuck"].pending <= 10 + 1  # its queue, and one in the handler
    if policy != "spill":
        assert stats["stuck"].dropped == total - stats["stuck"].pending
    else:
        assert stats["stuck"].dropped == 0
        assert stats["stuck"].behind


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "drop_newest", "spill"])
async def test_stats_add_up_at_every_moment_under_each_policy(policy: Backpressure) -> None:
    hold = Hold()
    async with EventBus() as bus:

        @bus.subscribe(name="counted", max_pending=8, backpressure=policy)
        async def counted(event: Tick) -> None:
            if event.n == 1:
                await hold.wait()
            if event.n % 5 == 0:
                raise ValueError(event.n)

        async def publisher() -> None:
            for n in range(2, 61):
                await bus.publish(Tick(n=n))
                assert_all_accounted(bus)

        await bus.publish(Tick(n=1))
        with anyio.fail_after(WAIT):
            await hold.entered.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher)
            await anyio.wait_all_tasks_blocked()  # done, or waiting for room under "block"
            assert_all_accounted(bus)
            hold.release()
        await bus.drain(WAIT)
        stats = bus.stats()["counted"]
        assert_all_accounted(bus)

    assert (stats.routed, stats.pending) == (60, 0)
    if policy in ("block", "spill"):
        assert (stats.dropped, stats.dead_lettered, stats.delivered) == (0, 12, 48)
    else:
        assert stats.dropped > 0
