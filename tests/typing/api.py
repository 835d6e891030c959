"""Uses the public API the way an application would; checked by ``mypy --strict``
(see ``[tool.mypy]`` in pyproject.toml). Nothing here runs in the test suite."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import assert_type
from uuid import uuid4

import anyio

from eventbus import (
    BusStats,
    CompactResult,
    DeadLetter,
    DeliveryContext,
    Event,
    EventBus,
    EventBusError,
    Handle,
    HistoryTruncated,
    MemoryStore,
    Middleware,
    PublishMiddleware,
    Record,
    Retry,
    SubscribeOptions,
    Subscription,
    SubscriptionStats,
    Transaction,
    TransactionError,
)
from eventbus.middleware import Commit


class OrderPlaced(Event, name="typing.order.placed", version=1):
    order_id: str
    amount: float


class OrderShipped(Event, name="typing.order.shipped"):
    order_id: str


def timing(call_next: Handle, context: DeliveryContext) -> Handle:
    async def handle(record: Record) -> None:
        started = anyio.current_time()
        try:
            await call_next(record)
        finally:
            print(context.name, record.seq, anyio.current_time() - started)

    return handle


def second_chance(call_next: Handle, context: DeliveryContext) -> Handle:
    async def handle(record: Record) -> None:
        try:
            await call_next(record)
        except ConnectionError:
            context.counters.retried()
            await call_next(record)

    return handle


def audit_publishes(call_next: Commit) -> Commit:
    async def commit(records: Sequence[Record]) -> None:
        await call_next(records)
        print([record.seq for record in records])

    return commit


bus_middleware: list[Middleware] = [timing, second_chance]
publish_middleware: list[PublishMiddleware] = [audit_publishes]


async def main() -> None:
    bus = EventBus(middleware=bus_middleware, publish_middleware=publish_middleware, max_causation_depth=8)

    @bus.subscribe
    async def ship(event: OrderPlaced) -> None:
        await bus.publish(OrderShipped(order_id=event.order_id))

    # the decorators hand the function back unchanged, signature included
    still_callable: Callable[[OrderPlaced], Awaitable[None]] = ship

    @bus.subscribe(
        OrderPlaced,
        where=lambda e: e.amount > 100,
        name="big-orders",
        retry=Retry(attempts=3, backoff=0.05),
        timeout=2.0,
        max_pending=1_000,
        backpressure="block",
        concurrency=1,
    )
    def audit(event: OrderPlaced, record: Record) -> None:
        print(record.seq, event.amount)

    still_sync: Callable[[OrderPlaced, Record], None] = audit

    def on_any(event: OrderPlaced | OrderShipped) -> None:
        print(event)

    subscription = bus.subscribe((OrderPlaced, OrderShipped), on_any, name="any", where={"order_id": "A1"})
    assert_type(subscription, Subscription)

    async with bus:
        seq = await bus.publish(OrderPlaced(order_id="A1", amount=120), headers={"tenant": "acme"})
        assert_type(seq, int)
        seqs = await bus.publish_many([OrderPlaced(order_id="A2", amount=5)])
        assert_type(seqs, list[int])
        assert_type(await bus.publish(OrderPlaced(order_id="A4", amount=1), event_id=uuid4()), int)
        assert_type(await bus.publish_many([OrderPlaced(order_id="A5", amount=1)], event_ids=[uuid4()]), list[int])
        assert_type(bus.publish_threadsafe(OrderPlaced(order_id="A6", amount=1), event_id=uuid4()), int)
        lifespan: Callable[[object], AbstractAsyncContextManager[None]] = bus.lifespan  # what Starlette takes
        print(lifespan)
        await bus.drain(timeout=5.0)

        async for record in bus.replay(OrderPlaced, from_seq=1):
            assert_type(record, Record[OrderPlaced])
            assert_type(record.event, OrderPlaced)
            print(record.seq, record.event, record.event_id, record.recorded_at, record.headers)
            print(record.correlation_id, record.causation_id, record.type, record.version)

        stats = bus.stats()
        assert_type(stats, BusStats)
        ship_stats = stats["big-orders"]
        assert_type(ship_stats, SubscriptionStats)
        print(ship_stats.delivered + ship_stats.failed + ship_stats.pending, ship_stats.position)

        letters = await bus.dead_letters.list(subscription="big-orders")
        assert_type(letters, Sequence[DeadLetter])
        redriven: int = await bus.dead_letters.redrive([letter.id for letter in letters])
        purged: int = await bus.dead_letters.purge()
        print(redriven, purged)

        bus.subscriptions["any"].close()
        await subscription.aclose()

    try:
        await bus.publish(OrderPlaced(order_id="A3", amount=1))
    except EventBusError as exc:
        print(exc)

    async with EventBus(store=MemoryStore(max_records=10_000)) as other:
        await other.publish(OrderShipped(order_id="B1"))
        result = await other.store.compact(keep=1_000, keep_age=timedelta(days=30))
        assert_type(result, CompactResult)
        first: int = other.store.first_seq
        try:
            async for shipped in other.replay(OrderShipped, from_seq=1):
                print(shipped.seq)
        except HistoryTruncated as exc:
            print(exc.first_seq, exc.requested, result.removed, result.held_by, first)
    print(still_callable, still_sync)


if __name__ == "__main__":
    anyio.run(main)


async def outbox(bus: EventBus, connection: sqlite3.Connection) -> None:
    async with bus.transaction(connection) as tx:
        assert_type(tx, Transaction)
        assert_type(await tx.publish(OrderPlaced(order_id="A1", amount=5)), int)
        assert_type(await tx.publish_many([OrderPlaced(order_id="A2", amount=5)]), list[int])
    try:
        assert_type(await bus.publish(OrderPlaced(order_id="A3", amount=5), transaction=connection), int)
    except TransactionError as exc:
        print(exc)


def handler_shapes(bus: EventBus, placed: Record[OrderPlaced]) -> None:
    """What the typed ``subscribe`` accepts: a handler taking the subscribed
    type or a base or union holding it, with or without the record (or a
    projection's transaction); unions and tuples are taken unchecked. The
    mistakes it rejects are in ``expected_errors.py``."""

    @bus.subscribe(OrderPlaced, where=lambda e: e.amount > 1, key=lambda e: e.order_id)
    async def exact(event: OrderPlaced) -> None: ...

    @bus.subscribe(OrderPlaced, name="wider")
    def wider(event: Event, record: Record[OrderPlaced]) -> int:
        return record.seq

    assert_type(wider(placed.event, record=placed), int)  # still its own signature after the event

    @bus.subscribe(OrderPlaced, name="either")
    def either(event: OrderPlaced | OrderShipped, *, verbose: bool = False) -> None: ...

    @bus.subscribe(OrderPlaced | OrderShipped, name="union", where=lambda e: e.order_id == "A1")
    def union(event: OrderPlaced | OrderShipped) -> None: ...

    @bus.subscribe((OrderPlaced, OrderShipped), name="pair")
    async def pair(event: OrderPlaced | OrderShipped, record: Record) -> None: ...

    @bus.subscribe(name="read-from-annotation", where={"order_id": "A1"})
    def from_annotation(event: OrderShipped) -> None: ...

    @bus.subscribe(OrderPlaced, name="projection")
    async def project(event: OrderPlaced, tx: Transaction) -> None: ...

    @bus.subscribe(Event, name="everything")
    def everything(event: Event) -> None: ...

    class Counter:
        def __call__(self, event: OrderPlaced) -> None: ...

    def tagged(tag: str, event: OrderPlaced) -> None: ...

    assert_type(bus.subscribe(OrderPlaced, Counter(), name="object"), Subscription)
    assert_type(bus.subscribe(OrderPlaced, functools.partial(tagged, "t"), name="partial"), Subscription)
    assert_type(bus.subscribe(OrderPlaced, lambda e, r: print(e.amount, r.seq), name="lambda"), Subscription)
    assert_type(bus.subscribe(OrderPlaced | OrderShipped, either, name="plain-union"), Subscription)
    options: SubscribeOptions[OrderPlaced] = {"where": lambda e: e.amount > 1, "timeout": 1.0}
    loose: SubscribeOptions = {"key": lambda e: e.order_id}
    assert_type(bus.subscribe(OrderPlaced, exact, name="typed-options", **options), Subscription)
    assert_type(bus.subscribe(OrderPlaced, exact, name="loose-options", **loose), Subscription)
    print(exact, union, pair, from_annotation, project, everything)
