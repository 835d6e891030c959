"""``eventbus demo``: a guided tour of a small order-processing service.

Everything it shows is the public API at work on a real store: events
declared as models, handlers chaining events (with causation ids), a
filtered handler, a failing handler that retries and ends as a dead letter,
a redrive after the fix, a durable subscription that resumes across runs,
and replaying the history.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

from ..bus import EventBus
from ..event import Event
from ..policies import Retry
from ..record import Record
from ..store.url import redact_url

__all__ = ["DEFAULT_DEMO_STORE", "create_bus", "run_demo"]

DEFAULT_DEMO_STORE = "sqlite:///eventbus-demo.db"


class OrderPlaced(Event, name="demo.order_placed", version=1):
    """A customer placed an order."""

    order_id: str
    customer: str
    amount: float


class PaymentCaptured(Event, name="demo.payment_captured", version=1):
    """The order's payment was taken."""

    order_id: str
    amount: float


class OrderShipped(Event, name="demo.order_shipped", version=1):
    """The order left the warehouse."""

    order_id: str


ORDERS = (
    OrderPlaced(order_id="A1", customer="ada", amount=42.0),
    OrderPlaced(order_id="A2", customer="grace", amount=180.0),
    OrderPlaced(order_id="A3", customer="mallory", amount=99.0),
    OrderPlaced(order_id="A4", customer="linus", amount=250.0),
)


def _big_order(event: OrderPlaced) -> bool:
    return event.amount > 100


class _Tour:
    """The demo service: its bus, handlers, and what it prints."""

    def __init__(self, store: str, out: TextIO) -> None:
        self.out = out
        self.fraud_rules_fixed = False
        self.history_seen = 0
        self.bus = bus = EventBus(store=store)
        bus.subscribe(OrderPlaced, self.charge, name="charge")
        bus.subscribe(PaymentCaptured, self.ship, name="ship")
        bus.subscribe(OrderPlaced, self.audit, where=_big_order, name="audit-big-orders")
        bus.subscribe(
            OrderPlaced, self.fraud_check, name="fraud-check", retry=Retry(attempts=3, backoff=0.01, jitter=0.0)
        )
        bus.subscribe(Event, self.history, name="order-history", durable=True)

    async def charge(self, event: OrderPlaced) -> None:
        """Take the payment, then announce it."""
        self.say(f"    charge        takes {event.amount:.2f} for {event.order_id}")
        await self.bus.publish(PaymentCaptured(order_id=event.order_id, amount=event.amount))

    async def ship(self, event: PaymentCaptured) -> None:
        """Send a paid order on its way."""
        self.say(f"    ship          sends {event.order_id} on its way")
        await self.bus.publish(OrderShipped(order_id=event.order_id))

    def audit(self, event: OrderPlaced, record: Record) -> None:
        """Flag big orders (a sync handler, filtered with where=)."""
        self.say(f"    audit         flags big order {event.order_id} (seq {record.seq}, a sync handler)")

    async def fraud_check(self, event: OrderPlaced) -> None:
        """Score the customer; fails for mallory until the rules are fixed."""
        if event.customer == "mallory" and not self.fraud_rules_fixed:
            raise RuntimeError(f"fraud rules cannot score customer {event.customer!r}")

    async def history(self, event: Event) -> None:
        """Count every event (durable: resumes after its checkpoint)."""
        self.history_seen += 1

    def say(self, line: str = "") -> None:
        self.out.write(line + "\n")
        self.out.flush()

    async def run(self, store: str) -> None:
        bus = self.bus
        say = self.say
        shown = redact_url(store)
        say(f"eventbus demo: a small order service on {shown}")
        say()
        say("1. Events are frozen pydantic models with a stable type name and version:")
        for cls in (OrderPlaced, PaymentCaptured, OrderShipped):
            fields = ", ".join(cls.model_fields)
            say(f"     {cls.__name__:<16} name={cls.__event_type__!r} version={cls.__event_version__} ({fields})")
        say()
        say("2. Five subscriptions: charge -> ship chain events, audit is filtered (amount > 100),")
        say("   fraud-check retries 3 times, order-history is durable (its position survives restarts).")
        async with bus:
            earlier = bus.head
            if earlier:
                say(f"   The store already holds {earlier} events from earlier runs;")
                say("   order-history resumes after its checkpoint instead of starting over.")
            say()
            say("3. Publishing four orders. publish() returns once the event is stored; handlers run on:")
            first = 0
            for order in ORDERS:
                seq = await bus.publish(order)
                first = first or seq
                say(f"  published {order.order_id} ({order.customer}, {order.amount:.2f}) as seq {seq}")
            await bus.drain()
            say()
            say("4. drain() waited for every handler. What each subscription did:")
            say(_row("subscription", "delivered", "retried", "dead", "position"))
            for name, stats in bus.stats().items():
                say(_row(name, stats.delivered, stats.retried, stats.dead_lettered, stats.position))
            say(f"   order-history handled {self.history_seen} events in this run.")
            say()
            letters = await bus.dead_letters.list("fraud-check")
            say(f"5. fraud-check failed for good on {len(letters)} delivery; it was kept as a dead letter:")
            for letter in letters:
                error = f"{letter.error_type}: {letter.error_message}"
                say(f"     seq {letter.record.seq}: {error} ({letter.attempts} attempts)")
            self.fraud_rules_fixed = True
            redriven = await bus.dead_letters.redrive([letter.id for letter in letters])
            say(
                f"   After fixing the rules, redrive delivered {redriven} again; dead letters left: "
                f"{len(await bus.dead_letters.list('fraud-check'))}."
            )
            say()
            say("6. Replaying this run's history shows how each event was caused:")
            by_id: dict[object, Record] = {}
            async for record in bus.replay(from_seq=first):
                by_id[record.event_id] = record
                cause = by_id.get(record.causation_id)
                because = f"caused by seq {cause.seq}" if cause is not None else "published by the app"
                order_id = getattr(record.event, "order_id", "?")
                say(f"     seq {record.seq:>4}  {record.type:<22} {order_id}  {because}")
        say()
        if bus.store.features.persistent:
            say(f"This history stays in {shown}:")
            say("run the demo on it again and the history grows, while order-history picks up")
            say("exactly where it stopped. Try `eventbus replay` on it too.")
        else:
            say("The store was in memory, so this history ended with the demo. Without --store, the demo")
            say("keeps it in a SQLite file, where every run adds to it and order-history resumes.")


def _row(name: str, *cells: object) -> str:
    return f"     {name:<18}" + "".join(f"{cell:>{width}}" for cell, width in zip(cells, (10, 9, 6, 10), strict=True))


@contextmanager
def _narrated_logs(out: TextIO) -> Iterator[None]:
    """Show the library's log lines inside the narration while the tour runs.

    The library never configures logging; the demo is an application, so it
    may, and it puts the previous configuration back afterwards.
    """
    previous = structlog.get_config()

    def indent(_: Any, __: str, event_dict: structlog.typing.EventDict) -> str:
        level = event_dict.pop("level")
        message = event_dict.pop("event")
        fields = " ".join(f"{key}={value}" for key, value in event_dict.items())
        return f"      [log {level}] {message}: {fields}"

    structlog.configure(
        processors=[structlog.processors.add_log_level, indent],
        logger_factory=structlog.PrintLoggerFactory(out),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    try:
        yield
    finally:
        structlog.configure(**previous)


def create_bus(url: str) -> EventBus:
    """The demo service's bus on the store ``url``, with its five subscriptions.

    For the tools that take ``--app``: ``eventbus catalog --app
    eventbus.cli.demo:create_bus`` describes it, and ``eventbus dlq redrive``
    can redrive through its handlers (which narrate on stdout).
    """
    return _Tour(url, sys.stdout).bus


async def run_demo(store: str = DEFAULT_DEMO_STORE, *, out: TextIO) -> None:
    """Run the tour on ``store`` and write its narration to ``out``."""
    with _narrated_logs(out):
        await _Tour(store, out).run(store)
