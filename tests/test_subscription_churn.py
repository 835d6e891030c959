"""Nothing after the append fails a publish: subscriptions of every policy
come and go (closed, closed and awaited, dropped and collected) while
publishers run, and every publish returns a seq of an event stored once."""

from __future__ import annotations

import gc
import itertools
from collections import Counter, deque
from pathlib import Path
from typing import get_args

import anyio
import anyio.lowlevel
import pytest

from eventbus import Backpressure, Event, EventBus, Subscription

WAIT = 60.0
"""Upper bound, in seconds, on the whole churn; a healthy run takes a second or two."""

PUBLISHERS = 4
ROUNDS = 2
"""How many times the churn goes through every (kind, ending) pair."""
WINDOW = 12
"""How many subscriptions are open at once."""
EVENTS_PER_STEP = 6
"""How many events the publishers publish, together, between two steps of the churn."""

KINDS = [
    (policy, durable, concurrency)
    for policy in get_args(Backpressure)
    for durable in (False, True)
    for concurrency in (1, 3)
]
"""(backpressure, durable, concurrency): every policy, durable and not, one worker and several."""
ENDINGS = ("close", "aclose", "collect")
"""How a subscription ends: closed, closed and awaited, closed and left to the collector."""
HANDLER_STEPS = 3
"""Checkpoints each handler call goes through: slower than the publishers, so inboxes fill up."""


class Churned(Event, name="churn.tick"):
    publisher: int
    n: int


async def handle(event: Churned) -> None:
    for _ in range(HANDLER_STEPS):
        await anyio.lowlevel.checkpoint()


class Progress:
    """How many events the publishers have had stored; the churner waits on it."""

    def __init__(self) -> None:
        self.published = 0
        self._changed = anyio.Event()

    def add(self, count: int) -> None:
        self.published += count
        self._changed.set()
        self._changed = anyio.Event()

    async def reached(self, count: int) -> None:
        while self.published < count:
            await self._changed.wait()


@pytest.mark.parametrize("policy", get_args(Backpressure))
async def test_a_publish_that_waited_for_room_passes_by_a_subscription_closed_and_freed_meanwhile(
    policy: Backpressure,
) -> None:
    gate = anyio.Event()
    held = anyio.Event()

    async def hold(event: Churned) -> None:
        held.set()
        await gate.wait()

    async with EventBus() as bus:
        bus.subscribe(Churned, hold, name="gate", max_pending=1, backpressure="block")
        closing = bus.subscribe(Churned, hold, name="closing", max_pending=1, backpressure=policy)
        with anyio.fail_after(WAIT):
            await bus.publish(Churned(publisher=0, n=1))  # taken by both workers, held there
            await held.wait()
            await anyio.wait_all_tasks_blocked()
            await bus.publish(Churned(publisher=0, n=2))  # queued in both: both full now
            returned: list[int] = []
            async with anyio.create_task_group() as tasks:

                async def publish_third() -> None:
                    returned.append(await bus.publish(Churned(publisher=0, n=3)))

                tasks.start_soon(publish_third)
                await anyio.wait_all_tasks_blocked()  # waiting for room in "gate", its route looked up
                assert returned == []
                assert closing.run is not None
                inbox = closing.run.inbox  # what the waiting publisher's route holds
                await closing.aclose()
                at_close = closing.stats()
                held_at_close = inbox.held()
                del closing
                gc.collect()  # its run, and the catch-up a spill would call, are gone
                gate.set()
            await bus.drain()

    assert returned == [3]
    # the closed subscription neither queued nor counted the third event
    after = inbox.stats(in_hand=0, position=at_close.position, holds_lease=None)
    assert (after.routed, after.dropped, inbox.held()) == (at_close.routed, at_close.dropped, held_at_close)


def test_every_policy_is_churned() -> None:
    assert {policy for policy, _, _ in KINDS} == {"block", "drop_oldest", "drop_newest", "spill"}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_publishes_return_seqs_while_subscriptions_of_every_policy_come_and_go(kind: str, tmp_path: Path) -> None:
    bus = EventBus() if kind == "memory" else EventBus(store=f"sqlite:///{tmp_path / 'events.db'}")
    returned: dict[tuple[int, int], int] = {}
    progress = Progress()
    done = anyio.Event()
    names = itertools.count()

    async def publisher(index: int) -> None:
        for n in itertools.count():
            if done.is_set():
                return
            if n % 3 == 2:  # every third step a batch of two, through publish_many's path
                events = [Churned(publisher=index, n=n), Churned(publisher=index, n=-n)]
                seqs = await bus.publish_many(events)
                returned.update(zip([(index, n), (index, -n)], seqs, strict=True))
                progress.add(2)
            else:
                returned[(index, n)] = await bus.publish(Churned(publisher=index, n=n))
                progress.add(1)
            # a publish to the memory store that finds room does not suspend: let the others run
            await anyio.lowlevel.checkpoint()

    def subscribe(policy: Backpressure, durable: bool, concurrency: int) -> Subscription:
        return bus.subscribe(
            Churned,
            handle,
            name=f"churn-{next(names)}",
            max_pending=1,
            backpressure=policy,
            durable=durable,
            concurrency=concurrency,
        )

    async def end(sub: Subscription, ending: str) -> None:
        sub.close()
        if ending == "aclose":
            await sub.aclose()  # its run has stopped: dropped below, it is freed at once
        elif ending == "collect":
            gc.collect()  # whatever has ended and is only in cycles goes now, while publishers run

    async def churner() -> None:
        # a sliding window: each step opens one subscription and ends the oldest,
        # so subscriptions of every kind overlap, and publishers waiting for room
        # in one "block" subscription are routing to others that end meanwhile
        window: deque[Subscription] = deque()
        steps = ROUNDS * len(KINDS) * len(ENDINGS)
        for step, kind, ending in zip(range(steps), itertools.cycle(KINDS), itertools.cycle(ENDINGS)):
            window.append(subscribe(*kind))
            await progress.reached(progress.published + EVENTS_PER_STEP)
            if step >= WINDOW:
                await end(window.popleft(), ending)
        while window:
            await end(window.popleft(), "aclose")
        await progress.reached(progress.published + EVENTS_PER_STEP)
        done.set()

    with anyio.fail_after(WAIT):
        async with bus:
            async with anyio.create_task_group() as tasks:
                for index in range(PUBLISHERS):
                    tasks.start_soon(publisher, index)
                tasks.start_soon(churner)
            stored = [record async for record in bus.replay(Churned, from_seq=1)]

    keys = [(record.event.publisher, record.event.n) for record in stored if isinstance(record.event, Churned)]
    assert len(keys) == len(stored)
    assert [key for key, times in Counter(keys).items() if times > 1] == []
    assert set(keys) == set(returned)
    assert {record.seq: key for record, key in zip(stored, keys, strict=True)} == {
        seq: key for key, seq in returned.items()
    }
    assert [record.seq for record in stored] == list(range(1, len(stored) + 1))
