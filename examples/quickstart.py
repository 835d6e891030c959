"""Quickstart: declare events, subscribe, publish, drain and replay.

    python examples/quickstart.py [STORE]

STORE is a store URL (``memory://``, the default, or ``sqlite:///events.db``)
or the path of a SQLite file (needs the eventbus-sqlite plugin). With a file,
run it twice: the replay at the end shows both runs' events.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import anyio
import structlog

from eventbus import Event, EventBus, Record


# Events are frozen pydantic models. ``name=`` is the stable type name the
# store keeps (so the class may move between modules); ``version=`` is for
# schema evolution (see schema_evolution.py).
class OrderPlaced(Event, name="quickstart.order_placed", version=1):
    order_id: str
    amount: float
    currency: str = "EUR"


class OrderCancelled(Event, name="quickstart.order_cancelled"):
    order_id: str
    reason: str


def store_from_argv() -> str:
    """The store URL from the command line: a URL as is, a path as a SQLite file."""
    if len(sys.argv) < 2:
        return "memory://"
    arg = sys.argv[1]
    return arg if "://" in arg else f"sqlite:///{Path(arg).resolve()}"


# Creating a bus opens nothing yet: that happens in ``async with bus``.
bus = EventBus(store=store_from_argv())


# 1. A bare decorator: the event type comes from the annotation, the
#    subscription's name from the function ("ship").
@bus.subscribe
async def ship(event: OrderPlaced) -> None:
    print(f"  ship: packing order {event.order_id}")


# 2. A decorator with options: a filter (a field mapping here; a predicate
#    works too) and a name. Sync handlers are fine, and a handler that takes a
#    second parameter receives the stored Record.
@bus.subscribe(OrderPlaced, where={"currency": "USD"}, name="us-desk")
def us_desk(event: OrderPlaced, record: Record) -> None:
    print(f"  us-desk: order {event.order_id} in USD (seq {record.seq})")


# 3. A Union annotation subscribes to each member.
@bus.subscribe
async def activity(event: OrderPlaced | OrderCancelled) -> None:
    print(f"  activity: {type(event).__name__} {event.order_id}")


# 4. A plain call returns the Subscription; close() unsubscribes it.
async def refund(event: OrderCancelled) -> None:
    print(f"  refund: order {event.order_id} ({event.reason})")


refunds = bus.subscribe(OrderCancelled, refund, name="refunds")


async def main() -> None:
    # The library logs through structlog but never configures it: that is the
    # application's call. Here: warnings and errors only, on stderr.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    print(f"subscriptions: {', '.join(bus.subscriptions)}")

    async with bus:  # starts the workers; drains and closes the store on exit
        first = bus.head + 1  # a SQLite file may hold earlier runs' events
        # publish() returns the seq once the event is stored; handlers run on
        # their own workers, and drain() waits until they have finished.
        seq = await bus.publish(OrderPlaced(order_id="A1", amount=20.0))
        print(f"published A1 as seq {seq}")
        await bus.drain()

        # publish_many stores a batch in one append.
        seqs = await bus.publish_many(
            [
                OrderPlaced(order_id="A2", amount=99.5, currency="USD"),
                OrderCancelled(order_id="A1", reason="changed my mind"),
            ]
        )
        print(f"published a batch as seqs {seqs}")
        await bus.drain()

        refunds.close()
        await bus.publish(OrderCancelled(order_id="A2", reason="out of stock"))
        await bus.drain()
        print("refunds is closed: the second cancellation reached activity only")

        for name, stats in bus.stats().items():
            print(f"stats {name}: delivered={stats.delivered} position={stats.position}")

        # Every event stays in the store under its seq: replay a range, of
        # every type or only some.
        print(f"replay of OrderPlaced from seq {first}:")
        async for record in bus.replay(OrderPlaced, from_seq=first):
            print(f"  seq {record.seq}: {record.event!r}")
        print("replay of everything:")
        count = 0
        async for record in bus.replay(from_seq=1):
            count += 1
            print(f"  seq {record.seq} {record.type} at {record.recorded_at:%H:%M:%S} id={record.event_id}")
        print(f"replayed {count} events in all")


if __name__ == "__main__":
    anyio.run(main)
