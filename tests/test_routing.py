"""Routing: which subscriptions an event reaches (MRO dispatch, unions,
`Event` itself), and that the route cache follows every (un)subscribe."""

from __future__ import annotations

from typing import Union

from core_events import WAIT, Animal, Cat, Dog, Ping, Pong, Puppy, Sink

from eventbus import Event, EventBus


async def _publish_zoo(bus: EventBus) -> None:
    for event in (Animal(name="a"), Dog(name="d"), Puppy(name="p"), Cat(name="c"), Ping(n=1)):
        await bus.publish(event)
    await bus.drain(WAIT)


async def test_a_base_class_subscription_receives_every_subclass() -> None:
    animals, dogs, puppies = Sink(), Sink(), Sink()
    async with EventBus() as bus:
        bus.subscribe(Animal, animals, name="animals")
        bus.subscribe(Dog, dogs, name="dogs")
        bus.subscribe(Puppy, puppies, name="puppies")
        await _publish_zoo(bus)

    assert animals.events == [Animal(name="a"), Dog(name="d"), Puppy(name="p"), Cat(name="c")]
    assert dogs.events == [Dog(name="d"), Puppy(name="p")]
    assert puppies.events == [Puppy(name="p")]


async def test_subscribing_to_event_receives_everything() -> None:
    everything = Sink()
    async with EventBus() as bus:
        bus.subscribe(Event, everything, name="everything")
        await _publish_zoo(bus)
    assert [type(event) for event in everything.events] == [Animal, Dog, Puppy, Cat, Ping]
    assert everything.seqs == [1, 2, 3, 4, 5]


async def test_an_event_matching_several_subscribed_classes_is_delivered_once() -> None:
    sink = Sink()
    async with EventBus() as bus:
        bus.subscribe((Animal, Dog, Puppy), sink, name="overlapping")
        await _publish_zoo(bus)
    assert sink.seqs == [1, 2, 3, 4]


async def test_a_union_annotation_subscribes_to_each_member() -> None:
    seen: list[Event] = []
    async with EventBus() as bus:

        @bus.subscribe
        async def pings_and_pongs(event: Ping | Pong) -> None:
            seen.append(event)

        await bus.publish(Ping(n=1))
        await bus.publish(Dog(name="d"))
        await bus.publish(Pong(n=2))
        await bus.drain(WAIT)

    assert seen == [Ping(n=1), Pong(n=2)]
    assert bus.subscriptions["test_a_union_annotation_subscribes_to_each_member.<locals>.pings_and_pongs"].types == (
        Ping,
        Pong,
    )


async def test_a_typing_union_annotation_works_too() -> None:
    seen: list[Event] = []
    async with EventBus() as bus:

        @bus.subscribe(name="old-style")
        def handler(event: Union[Ping, Cat]) -> None:  # noqa: UP007 - the typing.Union spelling is what is tested
            seen.append(event)

        await bus.publish(Cat(name="c"))
        await bus.publish(Pong(n=1))
        await bus.publish(Ping(n=2))
        await bus.drain(WAIT)

    assert seen == [Cat(name="c"), Ping(n=2)]


async def test_an_explicit_union_type_subscribes_to_each_member() -> None:
    sink = Sink()
    async with EventBus() as bus:
        sub = bus.subscribe(Ping | Cat, sink, name="explicit-union")
        await _publish_zoo(bus)
    assert sub.types == (Ping, Cat)
    assert [type(event) for event in sink.events] == [Cat, Ping]


async def test_a_subclass_defined_after_routing_started_reaches_its_base_subscription() -> None:
    animals = Sink()
    async with EventBus() as bus:
        bus.subscribe(Animal, animals, name="animals")
        await bus.publish(Dog(name="before"))

        class Wolf(Dog):
            pass

        await bus.publish(Wolf(name="after"))
        await bus.drain(WAIT)
    assert [type(event) for event in animals.events] == [Dog, Wolf]


async def test_a_subscription_added_after_a_type_was_published_gets_later_events() -> None:
    early, late = Sink(), Sink()
    async with EventBus() as bus:
        bus.subscribe(Ping, early, name="early")
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        bus.subscribe(Ping, late, name="late")
        await bus.publish(Ping(n=2))
        late_base = Sink()
        bus.subscribe(Event, late_base, name="late-base")
        await bus.publish(Ping(n=3))
        await bus.drain(WAIT)

    assert early.seqs == [1, 2, 3]
    assert late.seqs == [2, 3]
    assert late_base.seqs == [3]


async def test_a_closed_subscription_gets_nothing_more_while_others_still_do() -> None:
    kept, closed = Sink(), Sink()
    async with EventBus() as bus:
        bus.subscribe(Animal, kept, name="kept")
        sub = bus.subscribe(Animal, closed, name="closed")
        await bus.publish(Dog(name="1"))
        await bus.drain(WAIT)
        sub.close()
        await bus.publish(Dog(name="2"))
        await bus.publish(Cat(name="3"))
        await bus.drain(WAIT)

    assert kept.seqs == [1, 2, 3]
    assert closed.seqs == [1]
