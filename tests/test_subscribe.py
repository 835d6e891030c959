"""`bus.subscribe` in its three forms, handler shapes, ``where=``, names,
``bus.subscriptions``, closing a subscription, and the errors for handlers it
cannot use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from core_events import WAIT, Animal, Cat, Dog, Order, Ping, Pong, Puppy, Sink

from eventbus import DuplicateSubscription, EventBus, Record, Subscription


async def test_a_bare_decorator_takes_the_type_from_the_annotation_and_returns_the_function() -> None:
    seen: list[Ping] = []
    bus = EventBus()

    async def on_ping(event: Ping) -> None:
        seen.append(event)

    assert bus.subscribe(on_ping) is on_ping
    sub = bus.subscriptions[on_ping.__qualname__]
    assert sub.types == (Ping,)
    assert sub.handler is on_ping
    async with bus:
        await bus.publish(Pong(n=0))
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
    assert seen == [Ping(n=1)]


async def test_a_decorator_with_options_returns_the_function_and_applies_them() -> None:
    seen: list[Order] = []
    bus = EventBus()

    def audit(event: Order) -> None:
        seen.append(event)

    decorator = bus.subscribe(Order, where=lambda e: e.amount > 100, name="big-orders")
    assert decorator(audit) is audit
    assert bus.subscriptions["big-orders"].handler is audit
    async with bus:
        await bus.publish(Order(order_id="A1", amount=120))
        await bus.publish(Order(order_id="A2", amount=80))
        await bus.drain(WAIT)
    assert seen == [Order(order_id="A1", amount=120)]


def test_a_decorator_with_only_options_reads_the_annotation() -> None:
    bus = EventBus()

    @bus.subscribe(name="named")
    async def handler(event: Dog) -> None:
        pass

    assert bus.subscriptions["named"].types == (Dog,)


async def test_an_explicit_type_wins_over_the_annotation() -> None:
    sink = Sink()
    async with EventBus() as bus:
        bus.subscribe(Ping, sink, name="explicit")
        await bus.publish(Pong(n=1))
        await bus.publish(Ping(n=2))
        await bus.drain(WAIT)
    assert sink.events == [Ping(n=2)]


def test_a_plain_call_returns_the_subscription_found_under_its_name() -> None:
    bus = EventBus()
    sink = Sink()
    sub = bus.subscribe(Ping, sink, name="sink")
    assert isinstance(sub, Subscription)
    assert sub.name == "sink"
    assert sub.types == (Ping,)
    assert sub.handler is sink
    assert bus.subscriptions["sink"] is sub
    assert list(bus.subscriptions) == ["sink"]


def test_the_default_name_is_the_handlers_qualified_name() -> None:
    bus = EventBus()

    def on_ping(event: Ping) -> None:
        pass

    sub = bus.subscribe(Ping, on_ping)
    assert sub.name == "test_the_default_name_is_the_handlers_qualified_name.<locals>.on_ping"


def test_subscriptions_is_a_read_only_view() -> None:
    bus = EventBus()
    sub = bus.subscribe(Ping, Sink(), name="sink")
    with pytest.raises(TypeError):
        bus.subscriptions["other"] = sub


def test_a_taken_name_raises_duplicate_subscription_naming_it() -> None:
    bus = EventBus()
    bus.subscribe(Ping, Sink(), name="audit")
    with pytest.raises(DuplicateSubscription, match="'audit'"):
        bus.subscribe(Pong, Sink(), name="audit")
    assert bus.subscriptions["audit"].types == (Ping,)


def test_the_same_function_twice_without_a_name_is_a_duplicate() -> None:
    bus = EventBus()

    def handler(event: Ping) -> None:
        pass

    bus.subscribe(handler)
    with pytest.raises(DuplicateSubscription, match="handler"):
        bus.subscribe(handler)
    bus.subscribe(Ping, handler, name="again")
    assert len(bus.subscriptions) == 2


def test_a_closed_name_can_be_taken_again() -> None:
    bus = EventBus()
    first = bus.subscribe(Ping, Sink(), name="reused")
    first.close()
    second = bus.subscribe(Ping, Sink(), name="reused")
    assert bus.subscriptions["reused"] is second


def _sync_event(seen: list[tuple[Any, ...]]) -> Callable[..., None]:
    def handler(event: Ping) -> None:
        seen.append((event,))

    return handler


def _sync_event_record(seen: list[tuple[Any, ...]]) -> Callable[..., None]:
    def handler(event: Ping, record: Record) -> None:
        seen.append((event, record))

    return handler


def _async_event(seen: list[tuple[Any, ...]]) -> Callable[..., Any]:
    async def handler(event: Ping) -> None:
        seen.append((event,))

    return handler


def _async_event_record(seen: list[tuple[Any, ...]]) -> Callable[..., Any]:
    async def handler(event: Ping, record: Record) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append((event, record))

    return handler


@pytest.mark.parametrize("make", [_sync_event, _sync_event_record, _async_event, _async_event_record])
@pytest.mark.parametrize("in_thread", [False, True])
async def test_sync_and_async_handlers_take_event_or_event_and_record(
    make: Callable[[list[tuple[Any, ...]]], Callable[..., Any]], in_thread: bool
) -> None:
    seen: list[tuple[Any, ...]] = []
    handler = make(seen)
    if in_thread and make in (_async_event, _async_event_record):
        with pytest.raises(ValueError, match="in_thread"):
            EventBus().subscribe(handler, in_thread=True)
        return
    async with EventBus() as bus:
        bus.subscribe(handler, in_thread=in_thread)
        await bus.publish(Ping(n=1))
        await bus.publish(Ping(n=2))
        await bus.drain(WAIT)

    assert [args[0] for args in seen] == [Ping(n=1), Ping(n=2)]
    if make in (_sync_event_record, _async_event_record):
        assert [args[1].seq for args in seen] == [1, 2]
        assert all(isinstance(args[1], Record) for args in seen)
    else:
        assert all(len(args) == 1 for args in seen)


async def test_a_callable_object_can_be_a_handler() -> None:
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def __call__(self, event: Ping) -> None:
            self.count += 1

    counter = Counter()
    async with EventBus() as bus:
        returned = bus.subscribe(counter)
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
    assert returned is counter
    assert bus.subscriptions["test_a_callable_object_can_be_a_handler.<locals>.Counter"].handler is counter
    assert counter.count == 1


async def test_where_as_a_predicate_filters_events() -> None:
    sink = Sink()
    async with EventBus() as bus:
        bus.subscribe(Ping, sink, name="odd", where=lambda event: event.n % 2 == 1)
        for n in range(6):
            await bus.publish(Ping(n=n))
        await bus.drain(WAIT)
    assert [event.n for event in sink.events if isinstance(event, Ping)] == [1, 3, 5]


async def test_where_as_a_mapping_matches_field_values() -> None:
    sink = Sink()
    async with EventBus() as bus:
        bus.subscribe(Order, sink, name="a1", where={"order_id": "A1", "amount": 10.0})
        await bus.publish(Order(order_id="A1", amount=10))
        await bus.publish(Order(order_id="A1", amount=11))
        await bus.publish(Order(order_id="B2", amount=10))
        await bus.publish(Order(order_id="A1", amount=10))
        await bus.drain(WAIT)
    assert sink.seqs == [1, 4]


def test_where_mapping_naming_an_unknown_field_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="amuont"):
        EventBus().subscribe(Order, Sink(), name="typo", where={"amuont": 1})


async def test_where_mapping_on_a_base_class_checks_the_base_fields() -> None:
    sink = Sink()
    async with EventBus() as bus:
        bus.subscribe(Animal, sink, name="rex", where={"name": "rex"})
        await bus.publish(Dog(name="rex"))
        await bus.publish(Dog(name="fido"))
        await bus.drain(WAIT)
    assert sink.events == [Dog(name="rex")]


def test_where_that_is_neither_predicate_nor_mapping_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="where="):
        EventBus().subscribe(Ping, Sink(), name="bad", where=42)


async def test_a_closed_subscription_receives_nothing_more() -> None:
    sink = Sink()
    async with EventBus() as bus:
        sub = bus.subscribe(Ping, sink, name="sink")
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        sub.close()
        assert sub.closed
        assert "sink" not in bus.subscriptions
        for n in range(2, 10):
            await bus.publish(Ping(n=n))
        await bus.drain(WAIT)
        sub.close()  # closing again is harmless
    assert sink.seqs == [1]


async def test_aclose_waits_for_the_workers_and_unsubscribes() -> None:
    sink = Sink()
    async with EventBus() as bus:
        sub = bus.subscribe(Ping, sink, name="sink")
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        with anyio.fail_after(WAIT):
            await sub.aclose()
        assert sub.closed
        assert "sink" not in bus.subscriptions
        await bus.publish(Ping(n=2))
        await bus.drain(WAIT)
    assert sink.seqs == [1]


async def test_a_subscription_closed_before_the_bus_starts_never_runs() -> None:
    sink = Sink()
    bus = EventBus()
    bus.subscribe(Ping, sink, name="sink").close()
    async with bus:
        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
    assert sink.events == []


async def test_subscribing_on_a_running_bus_starts_delivering_at_once() -> None:
    sink = Sink()
    async with EventBus() as bus:
        await bus.publish(Ping(n=1))
        bus.subscribe(Ping, sink, name="late")
        await bus.publish(Ping(n=2))
        await bus.drain(WAIT)
    assert sink.seqs == [2]


async def test_subscribing_on_a_stopped_bus_takes_effect_at_its_next_run() -> None:
    async with EventBus() as bus:
        await bus.publish(Ping(n=1))
    sink = Sink()
    bus.subscribe(Ping, sink, name="late")
    async with bus:
        await bus.publish(Ping(n=2))
        await bus.drain(WAIT)
    assert sink.seqs == [2]


def _no_annotation(event):
    pass


def _int_annotation(event: int) -> None:
    pass


def _unresolvable(event: NotDefinedAnywhere) -> None:  # noqa: F821
    pass


def _no_parameters() -> None:
    pass


def _three_parameters(event: Ping, record: Record, extra: int) -> None:
    pass


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (_no_annotation, "no annotation on its first parameter"),
        (_int_annotation, "can only subscribe to Event subclasses"),
        (_unresolvable, "cannot resolve the annotation"),
        (_no_parameters, "takes no argument"),
    ],
)
def test_a_handler_without_a_usable_annotation_is_a_clear_type_error(handler: Any, message: str) -> None:
    bus = EventBus()
    with pytest.raises(TypeError, match=message):
        bus.subscribe(handler)
    with pytest.raises(TypeError, match=message):
        bus.subscribe()(handler)
    assert len(bus.subscriptions) == 0


def test_a_handler_taking_more_than_event_and_record_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"must take \(event\) or \(event, record\)"):
        EventBus().subscribe(_three_parameters)


@pytest.mark.parametrize("spec", [int, dict, (Ping, str), Ping | int])
def test_subscribing_to_something_that_is_not_an_event_class_is_a_type_error(spec: Any) -> None:
    with pytest.raises(TypeError, match="Event subclasses"):
        EventBus().subscribe(spec, Sink(), name="bad")


def _on_pong(event: Pong) -> None:
    pass


def _on_dog(event: Dog, record: Record) -> None:
    pass


def _on_ping_or_pong(event: Ping | Pong) -> None:
    pass


@pytest.mark.parametrize(
    ("spec", "handler", "message"),
    [
        (Ping, _on_pong, "takes Pong, so it cannot be subscribed to Ping"),
        (Animal, _on_dog, "takes Dog, so it cannot be subscribed to Animal"),
        ((Dog, Cat), _on_dog, "takes Dog, so it cannot be subscribed to Cat"),
        (Ping | Pong | Dog, _on_ping_or_pong, "takes Ping | Pong, so it cannot be subscribed to Dog"),
    ],
)
def test_a_handler_annotated_for_other_events_is_a_type_error_naming_both(
    spec: Any, handler: Callable[..., None], message: str
) -> None:
    bus = EventBus()
    with pytest.raises(TypeError, match=message):
        bus.subscribe(spec, handler, name="mismatch")
    with pytest.raises(TypeError, match=message):
        bus.subscribe(spec, name="mismatch")(handler)
    assert len(bus.subscriptions) == 0


def _on_animal(event: Animal) -> None:
    pass


def _on_dog_or_cat(event: Dog | Cat) -> None:
    pass


def _on_anything(event: Any) -> None:
    pass


def _on_object(event: object) -> None:
    pass


@pytest.mark.parametrize(
    ("spec", "handler"),
    [
        (Dog, _on_animal),
        ((Dog, Cat), _on_animal),
        (Puppy, _on_dog_or_cat),
        (Ping | Pong, _on_ping_or_pong),
        (Ping, Sink()),
        (Ping, _on_anything),
        (Ping, _on_object),
        (Ping, _no_annotation),
        (Ping, _unresolvable),
        (Ping, lambda event: None),
    ],
)
def test_a_handler_whose_annotation_accepts_the_events_or_says_nothing_checkable_is_taken(
    spec: Any, handler: Callable[..., None]
) -> None:
    bus = EventBus()
    bus.subscribe(spec, handler, name="fits")
    assert bus.subscriptions["fits"].handler is handler


def test_a_handler_that_is_not_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="callable"):
        EventBus().subscribe(Ping, "not a function", name="bad")


@pytest.mark.parametrize(
    "options",
    [
        {"max_pending": 0},
        {"concurrency": 0},
        {"timeout": 0},
        {"backpressure": "explode"},
        {"from_seq": 0},
        {"name": ""},
    ],
)
def test_invalid_options_are_a_value_error(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EventBus().subscribe(Ping, Sink(), **{"name": "x", **options})
