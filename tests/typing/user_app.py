# pyright: strict
"""An application's code, checked against the *installed* wheels as its users see them.

CI builds the wheels of the core (with its ``otel`` extra) and both store
plugins, installs them into a fresh virtual environment, copies
this file out of the source tree and runs ``mypy --strict`` and ``pyright``
(strict, by the comment above) on it there: that catches a missing
``py.typed`` or an untyped public name, which checking the source tree cannot.
``assert_type`` fails both checkers when an inferred type is not the one named.
Nothing here runs in the test suite.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import assert_type

import anyio
from eventbus_postgres import PostgresOptions, PostgresStore
from eventbus_sqlite import SqliteOptions, SqliteStats, SqliteStore

from eventbus import BusStats, Event, EventBus, Plugin, Record, Replay, Retry, Store, Subscription, SubscriptionStats
from eventbus.otel import OpenTelemetry


class OrderPlaced(Event, name="user_app.order.placed", version=1):
    order_id: str
    amount: float


class PaymentCaptured(Event, name="user_app.payment.captured"):
    order_id: str


sqlite = SqliteStore("orders.db", SqliteOptions(synchronous="normal"))
postgres: Store = PostgresStore("postgresql://app@127.0.0.1:5432/orders", schema=PostgresOptions().schema)


class Heartbeat(Plugin):
    """A plugin's hooks take the bus as the `EventBus` it is."""

    name = "heartbeat"

    async def start(self, bus: EventBus) -> None:
        assert_type(bus.head, int)

    async def run(self, bus: EventBus, /) -> None:
        await bus.publish(PaymentCaptured(order_id="heartbeat"))


bus = EventBus(store=sqlite, plugins=[OpenTelemetry(), Heartbeat()])
totals: dict[str, float] = {}


@bus.subscribe
async def capture(event: OrderPlaced) -> None:
    await bus.publish(PaymentCaptured(order_id=event.order_id))


@bus.subscribe(OrderPlaced, name="big-orders", where=lambda e: e.amount > 100, retry=Retry(attempts=3, backoff=0.05))
def audit(event: OrderPlaced, record: Record) -> None:
    totals[event.order_id] = event.amount
    print(record.seq, record.recorded_at.isoformat(), record.headers.get("tenant"))


def on_payment(event: PaymentCaptured) -> None:
    print(event.order_id)


payments = bus.subscribe(PaymentCaptured, on_payment, retry=Retry(attempts=2, backoff=0.01), timeout=1.0)
assert_type(payments, Subscription)

# the decorators hand the functions back unchanged
as_async: Callable[[OrderPlaced], Awaitable[None]] = capture
as_sync: Callable[[OrderPlaced, Record], None] = audit


async def main() -> None:
    async with bus:
        seq = await bus.publish(OrderPlaced(order_id="A1", amount=120), headers={"tenant": "acme"})
        assert_type(seq, int)
        await bus.drain(timeout=5)

        orders = bus.replay(OrderPlaced, from_seq=1)
        assert_type(orders, Replay[OrderPlaced])
        async for record in orders:
            assert_type(record, Record[OrderPlaced])
            assert_type(record.event, OrderPlaced)
            print(record.event.amount, record.event_id.hex)

        async for either in bus.replay(OrderPlaced, PaymentCaptured):
            assert_type(either.event, OrderPlaced | PaymentCaptured)

        async for any_record in bus.replay():
            assert_type(any_record, Record)
            assert_type(any_record.event, Event)

        async for by_name in bus.replay("user_app.order.placed", to_seq=seq):
            assert_type(by_name.event, Event)

        stats = bus.stats()
        assert_type(stats, BusStats)
        big = stats["big-orders"]
        assert_type(big, SubscriptionStats)
        print(stats.published, big.delivered, big.failed, big.dropped, big.pending)
        assert_type(sqlite.stats(), SqliteStats)
    print(postgres)


if __name__ == "__main__":
    anyio.run(main)
