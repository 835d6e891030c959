"""A small order-processing service: chained handlers, a filtered handler,
and a failing handler whose deliveries end as dead letters, get listed, and
are redriven once the handler is fixed.

    python examples/order_service.py [STORE]

STORE is a store URL (``memory://``, the default, ``sqlite:///orders.db``, a
``postgresql://`` URL) or the path of a SQLite file. The library's retry and
dead-letter log lines go to stderr.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from uuid import UUID

import anyio
import structlog

from eventbus import Event, EventBus, Record, Retry


class OrderPlaced(Event, name="shop.order_placed"):
    order_id: str
    customer: str
    amount: float


class PaymentCaptured(Event, name="shop.payment_captured"):
    order_id: str
    amount: float


class InvoiceSent(Event, name="shop.invoice_sent"):
    order_id: str
    email: str


# The "bug": the address book lacks bob, so invoicing his order fails.
ADDRESS_BOOK = {"ada": "ada@example.com", "grace": "grace@example.com"}
ORDERS = [
    OrderPlaced(order_id="A1", customer="ada", amount=42.0),
    OrderPlaced(order_id="A2", customer="bob", amount=180.0),
    OrderPlaced(order_id="A3", customer="grace", amount=250.0),
]


def store_from_argv() -> str:
    """The store URL from the command line: a URL as is, a path as a SQLite file."""
    if len(sys.argv) < 2:
        return "memory://"
    arg = sys.argv[1]
    return arg if "://" in arg else f"sqlite:///{Path(arg).resolve()}"


def build_service(store: str) -> EventBus:
    """The service: a bus and its four subscriptions."""
    bus = EventBus(store=store)
    customers: dict[str, str] = {}  # order id -> customer, filled as orders come in

    @bus.subscribe(name="payments")
    async def capture_payment(event: OrderPlaced) -> None:
        customers[event.order_id] = event.customer
        print(f"  payments: captured {event.amount:.2f} for {event.order_id}")
        # Published from a handler: the new event's causation_id is this
        # event's id, and it joins the same correlation chain.
        await bus.publish(PaymentCaptured(order_id=event.order_id, amount=event.amount))

    # A filtered handler: only big orders reach it (where= takes a predicate,
    # or a mapping of field -> expected value).
    @bus.subscribe(OrderPlaced, where=lambda e: e.amount >= 100, name="big-orders")
    def review_big_order(event: OrderPlaced, record: Record) -> None:
        print(f"  big-orders: {event.order_id} ({event.amount:.2f}) flagged for review, seq {record.seq}")

    # A handler that fails for one order: it is retried three times, a short
    # while apart, each attempt limited to a second; then it becomes a dead letter.
    @bus.subscribe(name="invoicing", retry=Retry(attempts=3, backoff=0.01, jitter=0.0), timeout=1.0)
    async def send_invoice(event: PaymentCaptured, record: Record) -> None:
        customer = customers[event.order_id]
        email = ADDRESS_BOOK.get(customer)
        if email is None:
            raise LookupError(f"no e-mail address for customer {customer!r}")
        print(f"  invoicing: invoice for {event.order_id} sent to {email}")
        await bus.publish(InvoiceSent(order_id=event.order_id, email=email))

    @bus.subscribe(name="notifications")
    async def notify(event: InvoiceSent) -> None:
        print(f"  notifications: told {event.email} that {event.order_id} is on its way")

    return bus


async def main() -> None:
    # Retries and dead letters are logged at warning/error; show them briefly on stderr.
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    bus = build_service(store_from_argv())
    async with bus:
        print("placing three orders")
        for order in ORDERS:
            await bus.publish(order)
        await bus.drain()  # every handler finished: handled, or dead-lettered after its retries

        print("stats after the orders:")
        for name, stats in bus.stats().items():
            print(
                f"  {name:<14} delivered={stats.delivered} retried={stats.retried} dead_lettered={stats.dead_lettered}"
            )

        # The failed delivery was not lost: it waits in the store as a dead letter.
        letters = await bus.dead_letters.list(subscription="invoicing")
        print(f"dead letters of invoicing: {len(letters)}")
        for letter in letters:
            print(
                f"  seq {letter.record.seq} {letter.record.type}: {letter.error_type}: "
                f"{letter.error_message} after {letter.attempts} attempts"
            )

        print("fixing the handler: bob's address is added")
        ADDRESS_BOOK["bob"] = "bob@example.com"
        # Redrive delivers each letter again, to its own subscription only;
        # the letter is removed when the delivery succeeds.
        redriven = await bus.dead_letters.redrive([letter.id for letter in letters])
        await bus.drain()  # the InvoiceSent published by the redriven handler
        print(f"redriven: {redriven}, dead letters left: {len(await bus.dead_letters.list())}")

        # The history shows how each event came about.
        print("history:")
        seq_of: dict[UUID, int] = {}
        async for record in bus.replay():
            seq_of[record.event_id] = record.seq
            cause = seq_of.get(record.causation_id) if record.causation_id is not None else None
            because = f"caused by seq {cause}" if cause is not None else "placed by a customer"
            print(f"  seq {record.seq:>2} {record.type:<22} {because}")


if __name__ == "__main__":
    anyio.run(main)
