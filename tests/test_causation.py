"""Causation and correlation ids of events published from handlers, and the
``max_causation_depth`` guard against handlers feeding each other forever."""

from __future__ import annotations

from itertools import pairwise

from core_events import WAIT, Ping, Pong, stored

from eventbus import CausationLoopError, EventBus, Record
from eventbus.bus import DEFAULT_MAX_CAUSATION_DEPTH


async def test_an_event_published_outside_a_handler_starts_its_own_chain() -> None:
    async with EventBus() as bus:
        await bus.publish(Ping(n=1))
        await bus.publish(Ping(n=2), headers={"h": "v"})
        await bus.publish_many([Ping(n=3)])
        records = await stored(bus.store)
    for record in records:
        assert record.causation_id is None
        assert record.correlation_id == record.event_id


async def test_events_published_from_handlers_carry_causation_and_inherit_correlation() -> None:
    async with EventBus() as bus:

        @bus.subscribe
        async def relay(event: Ping) -> None:
            if event.n < 3:
                await bus.publish(Ping(n=event.n + 1))

        await bus.publish(Ping(n=0))
        await bus.drain(WAIT)
        records = await stored(bus.store)

    assert [record.event for record in records] == [Ping(n=n) for n in range(4)]
    root = records[0]
    for parent, child in pairwise(records):
        assert child.causation_id == parent.event_id
        assert child.correlation_id == root.event_id


async def test_every_publish_form_inside_a_handler_sets_causation() -> None:
    async with EventBus() as bus:

        @bus.subscribe
        async def fan_out(event: Ping, record: Record) -> None:
            await bus.publish(Pong(n=1))
            await bus.publish(Pong(n=2), headers={"via": "headers"})
            await bus.publish_many([Pong(n=3), Pong(n=4)])

        await bus.publish(Ping(n=0))
        await bus.drain(WAIT)
        root, *children = await stored(bus.store)

    assert len(children) == 4
    for child in children:
        assert child.causation_id == root.event_id
        assert child.correlation_id == root.event_id


async def test_the_chain_follows_events_across_subscriptions() -> None:
    async with EventBus() as bus:

        @bus.subscribe
        async def first(event: Ping) -> None:
            await bus.publish(Pong(n=event.n))

        @bus.subscribe
        async def second(event: Pong, record: Record) -> None:
            if event.n == 0:
                await bus.publish(Ping(n=1))

        await bus.publish(Ping(n=0))
        await bus.drain(WAIT)
        records = await stored(bus.store)

    assert [type(record.event) for record in records] == [Ping, Pong, Ping, Pong]
    for parent, child in pairwise(records):
        assert child.causation_id == parent.event_id
    assert {record.correlation_id for record in records} == {records[0].event_id}


async def test_the_chain_does_not_leak_to_publishes_outside_handlers() -> None:
    async with EventBus() as bus:

        @bus.subscribe
        async def relay(event: Ping) -> None:
            if event.n == 0:
                await bus.publish(Ping(n=1))

        await bus.publish(Ping(n=0))
        await bus.drain(WAIT)
        await bus.publish(Ping(n=2))
        last = (await stored(bus.store))[-1]
    assert last.event == Ping(n=2)
    assert last.causation_id is None
    assert last.correlation_id == last.event_id


async def test_a_chain_deeper_than_max_causation_depth_is_refused_inside_the_handler() -> None:
    refused: list[CausationLoopError] = []
    async with EventBus(max_causation_depth=5) as bus:

        @bus.subscribe
        async def forever(event: Ping) -> None:
            try:
                await bus.publish(Ping(n=event.n + 1))
            except CausationLoopError as exc:
                refused.append(exc)

        await bus.publish(Ping(n=0))
        await bus.drain(WAIT)
        records = await stored(bus.store)

    # the root is depth 0; five more levels are allowed, the sixth is refused
    assert [record.event for record in records] == [Ping(n=n) for n in range(6)]
    [error] = refused
    message = str(error)
    assert "max_causation_depth=5" in message
    assert "core.ping" in message
    assert f"seq {records[-1].seq}" in message


async def test_a_handler_that_lets_the_loop_error_escape_ends_as_a_dead_letter() -> None:
    async with EventBus(max_causation_depth=3) as bus:

        @bus.subscribe(name="ping-pong")
        async def ping_pong(event: Ping | Pong) -> None:
            await bus.publish(Pong(n=0) if isinstance(event, Ping) else Ping(n=0))

        await bus.publish(Ping(n=0))
        await bus.drain(WAIT)
        records = await stored(bus.store)
        letters = await bus.dead_letters.list()
        stats = bus.stats()["ping-pong"]

    assert len(records) == 4
    [letter] = letters
    assert letter.error_type == "eventbus.exceptions.CausationLoopError"
    assert letter.record.seq == 4
    assert "max_causation_depth=3" in letter.error_message
    assert stats.delivered == 3
    assert stats.dead_lettered == 1


async def test_publish_many_at_the_limit_stores_nothing_of_the_batch() -> None:
    async with EventBus(max_causation_depth=1) as bus:

        @bus.subscribe
        async def relay(event: Ping) -> None:
            await bus.publish_many([Pong(n=1), Pong(n=2)])

        @bus.subscribe
        async def pong_relay(event: Pong) -> None:
            await bus.publish_many([Ping(n=9)])

        await bus.publish(Ping(n=0))
        await bus.drain(WAIT)
        records = await stored(bus.store)
    assert [record.event for record in records] == [Ping(n=0), Pong(n=1), Pong(n=2)]


async def test_the_default_depth_allows_64_levels() -> None:
    assert EventBus().max_causation_depth == DEFAULT_MAX_CAUSATION_DEPTH == 64
    async with EventBus() as bus:

        @bus.subscribe
        async def forever(event: Ping) -> None:
            await bus.publish(Ping(n=event.n + 1))

        await bus.publish(Ping(n=0))
        await bus.drain(WAIT)
        records = await stored(bus.store)
        letters = await bus.dead_letters.list()
    assert len(records) == DEFAULT_MAX_CAUSATION_DEPTH + 1
    assert [letter.record.seq for letter in letters] == [DEFAULT_MAX_CAUSATION_DEPTH + 1]
