"""``bus.stats()``: a read-only mapping of frozen `SubscriptionStats`, and what
each counter (delivered, failed, retried, dead_lettered, dropped, pending,
position) counts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import anyio
import pytest
from core_events import WAIT, Gate, Ping, Pong, Sink

from eventbus import BusStats, DeadLetter, EventBus, MemoryStore, Retry, SubscriptionStats

ONE_RETRY = Retry(attempts=2, backoff=0, jitter=0)


def _balanced(stats: SubscriptionStats) -> bool:
    return stats.delivered + stats.dropped + stats.dead_lettered + stats.pending == stats.routed


async def test_stats_is_a_mapping_of_frozen_subscription_stats() -> None:
    async with EventBus() as bus:
        bus.subscribe(Ping, Sink(), name="a")
        bus.subscribe(Pong, Sink(), name="b")
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        stats = bus.stats()

    assert isinstance(stats, BusStats)
    assert isinstance(stats, Mapping)
    assert list(stats) == ["a", "b"]
    assert len(stats) == 2
    assert "a" in stats
    assert all(isinstance(value, SubscriptionStats) for value in stats.values())
    assert stats["a"] == bus.subscriptions["a"].stats()
    assert (stats.published, stats.head) == (1, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats["a"].delivered = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.published = 5
    with pytest.raises(TypeError):
        stats.subscriptions["c"] = stats["a"]
    with pytest.raises(KeyError):
        stats["missing"]


async def test_a_snapshot_does_not_change_afterwards() -> None:
    async with EventBus() as bus:
        bus.subscribe(Ping, Sink(), name="sink")
        before = bus.stats()
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        after = bus.stats()
    assert before["sink"].delivered == 0
    assert after["sink"].delivered == 1


async def test_counters_of_handled_retried_and_dead_lettered_deliveries() -> None:
    first_attempts: set[int] = set()
    async with EventBus() as bus:
        bus.subscribe(Ping, Sink(), name="ok")

        @bus.subscribe(name="flaky", retry=ONE_RETRY)
        def flaky(event: Ping) -> None:
            if event.n not in first_attempts:
                first_attempts.add(event.n)
                raise RuntimeError("first attempt fails")

        @bus.subscribe(name="broken", retry=ONE_RETRY)
        def broken(event: Ping) -> None:
            raise RuntimeError("always fails")

        @bus.subscribe(name="no-retry")
        def no_retry(event: Ping) -> None:
            if event.n % 2:
                raise RuntimeError("odd")

        seqs = [await bus.publish(Ping(n=n)) for n in range(4)]
        await bus.publish(Pong(n=99))
        await bus.drain(WAIT)
        stats = bus.stats()

    last = seqs[-1]
    assert stats["ok"] == SubscriptionStats(
        routed=4, delivered=4, failed=0, retried=0, dead_lettered=0, dropped=0, pending=0, position=last, behind=False
    )
    assert stats["flaky"] == SubscriptionStats(
        routed=4, delivered=4, failed=4, retried=4, dead_lettered=0, dropped=0, pending=0, position=last, behind=False
    )
    assert stats["broken"] == SubscriptionStats(
        routed=4, delivered=0, failed=8, retried=4, dead_lettered=4, dropped=0, pending=0, position=last, behind=False
    )
    assert stats["no-retry"] == SubscriptionStats(
        routed=4, delivered=2, failed=2, retried=0, dead_lettered=2, dropped=0, pending=0, position=last, behind=False
    )
    assert (stats.published, stats.head) == (5, 5)


async def test_pending_counts_queued_and_running_deliveries() -> None:
    gate = Gate()
    async with EventBus() as bus:

        @bus.subscribe(name="held")
        async def held(event: Ping) -> None:
            await gate.pass_through()

        await bus.publish(Ping(n=1))
        await gate.entered.wait()
        await bus.publish(Ping(n=2))
        await bus.publish(Ping(n=3))
        during = bus.stats()["held"]
        gate.open()
        await bus.drain(WAIT)
        after = bus.stats()["held"]

    assert (during.routed, during.pending, during.delivered, during.position) == (3, 3, 0, 0)
    assert (after.routed, after.pending, after.delivered, after.position) == (3, 0, 3, 3)
    assert _balanced(during)
    assert _balanced(after)


class SlowLetterStore(MemoryStore):
    """A real `MemoryStore` whose dead letters are stored only once the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.storing = anyio.Event()
        self.let_through = anyio.Event()

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self.storing.set()
        await self.let_through.wait()
        await super().add_dead_letters(letters)


async def test_a_failing_delivery_is_pending_until_its_dead_letter_is_stored() -> None:
    store = SlowLetterStore()
    async with EventBus(store=store) as bus:

        @bus.subscribe(name="fails")
        async def fails(event: Ping) -> None:
            raise ValueError("no")

        await bus.publish(Ping(n=1))
        with anyio.fail_after(WAIT):
            await store.storing.wait()
        while_storing = bus.stats()["fails"]
        store.let_through.set()
        await bus.drain(WAIT)
        stored = bus.stats()["fails"]

    assert (while_storing.pending, while_storing.dead_lettered, while_storing.delivered) == (1, 0, 0)
    assert (stored.pending, stored.dead_lettered, stored.delivered) == (0, 1, 0)
    assert _balanced(while_storing)
    assert _balanced(stored)


async def test_dropped_events_are_counted_and_position_is_the_last_handled_seq() -> None:
    gate = Gate()
    async with EventBus() as bus:

        @bus.subscribe(name="lossy", max_pending=1, backpressure="drop_newest")
        async def lossy(event: Ping) -> None:
            await gate.pass_through()

        await bus.publish(Ping(n=1))
        await gate.entered.wait()
        for n in range(2, 6):
            await bus.publish(Ping(n=n))
        during = bus.stats()["lossy"]
        gate.open()
        await bus.drain(WAIT)
        after = bus.stats()["lossy"]

    # seq 1 is in the handler, seq 2 fills the one free place, seqs 3-5 are dropped
    assert (during.routed, during.dropped, during.pending) == (5, 3, 2)
    assert (after.delivered, after.dropped, after.pending, after.position) == (2, 3, 0, 2)
    assert _balanced(during)
    assert _balanced(after)


async def test_filtered_events_are_not_routed_and_position_follows_routed_events() -> None:
    async with EventBus() as bus:
        bus.subscribe(Ping, Sink(), name="even", where=lambda event: event.n % 2 == 0)
        bus.subscribe(Pong, Sink(), name="pongs")
        for n in range(5):
            await bus.publish(Ping(n=n))
        pong_seq = await bus.publish(Pong(n=0))
        await bus.publish(Ping(n=7))
        await bus.drain(WAIT)
        stats = bus.stats()

    assert (stats["even"].routed, stats["even"].delivered, stats["even"].position) == (3, 3, 5)
    assert (stats["pongs"].routed, stats["pongs"].position) == (1, pong_seq)


async def test_a_closed_subscription_leaves_the_stats() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe(Ping, Sink(), name="gone")
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        sub.close()
        stats = bus.stats()
    assert "gone" not in stats
    assert sub.stats().delivered == 1


async def test_to_dict_is_plain_json_serialisable_data() -> None:
    async with EventBus() as bus:
        bus.subscribe(Ping, Sink(), name="sink")

        @bus.subscribe(name="failing", retry=ONE_RETRY)
        async def failing(event: Ping) -> None:
            raise ValueError("no")

        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        stats = bus.stats()

    data = stats.to_dict()

    assert json.loads(json.dumps(data)) == data
    assert data == {
        "published": 1,
        "head": 1,
        "first_seq": 1,
        "subscriptions": {
            "sink": {
                "routed": 1,
                "delivered": 1,
                "failed": 0,
                "retried": 0,
                "dead_lettered": 0,
                "dropped": 0,
                "pending": 0,
                "position": 1,
                "behind": False,
                "overflowed": 0,
                "holds_lease": None,
            },
            "failing": {
                "routed": 1,
                "delivered": 0,
                "failed": 2,
                "retried": 1,
                "dead_lettered": 1,
                "dropped": 0,
                "pending": 0,
                "position": 1,
                "behind": False,
                "overflowed": 0,
                "holds_lease": None,
            },
        },
    }
    assert list(data["subscriptions"]) == list(stats)
    assert data["subscriptions"]["sink"] == stats["sink"].to_dict()
    assert type(data["subscriptions"]) is dict
