"""Schema evolution: events stored as version 1 are read back as version 2.

    python examples/schema_evolution.py [STORE]

Stores keep each event's type name and version with its JSON. When a class
changes shape, give it the next version and register an *upcaster* that
turns the stored JSON of the old version into the new one; replay and
catch-up then hand every handler the current class. An old record that
cannot be upgraded raises `EventDecodeError` from replay (and becomes a dead
letter during catch-up): it is never skipped silently.

STORE is the path of a SQLite file or a persistent store URL
(``sqlite:///orders.db``, ``postgresql://...``). Without it the example uses
a file in a temporary directory and removes it at the end.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import structlog

from eventbus import Event, EventBus, Record


# Version 1, as last year's code defined it: the amount as a float, in euros.
# Both versions live in this one file so that the example runs on its own; in
# a real service version 1 is only in the store (and in git history).
class OrderPlacedV1(Event, name="evolution.order_placed", version=1):
    order_id: str
    amount: float


# Version 2, today's class: integer cents and an explicit currency.
class OrderPlaced(Event, name="evolution.order_placed", version=2):
    order_id: str
    amount_cents: int
    currency: str


# The upcaster gets the stored JSON object of version 1 and returns that of
# version 2. A chain of them (1 -> 2, 2 -> 3, ...) upgrades any old version.
@OrderPlaced.upcaster(from_version=1)
def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": data["order_id"],
        "amount_cents": round(data["amount"] * 100),
        "currency": "EUR",
    }


def store_url(arg: str, default_dir: Path) -> str:
    """A URL as is, a path as a SQLite file; no argument: a file in ``default_dir``."""
    if not arg:
        return f"sqlite:///{default_dir / 'evolution.db'}"
    if arg.startswith("memory:"):
        # the memory store keeps the published objects themselves, so there is nothing to upgrade
        raise SystemExit("schema_evolution needs a persistent store: a SQLite path or URL, or a postgresql:// URL")
    return arg if "://" in arg else f"sqlite:///{Path(arg).resolve()}"


async def run(store: str) -> None:
    print(f"store: {store}")

    print("last year: the service publishes version 1 events")
    async with EventBus(store=store) as bus:
        first = bus.head + 1  # a file given on the command line may hold earlier runs' events
        for order_id, amount in (("A1", 19.99), ("A2", 250.0)):
            seq = await bus.publish(OrderPlacedV1(order_id=order_id, amount=amount))
            print(f"  stored seq {seq}: {order_id} amount={amount}")

    print("today: the service restarts with version 2 as the current class")
    totals: list[str] = []
    bus = EventBus(store=store)

    # A catch-up subscription reads the old records through the upcaster too.
    @bus.subscribe(name="revenue", from_seq=first)
    async def revenue(event: OrderPlaced, record: Record) -> None:
        totals.append(f"{event.order_id}={event.amount_cents} {event.currency} (stored v{record.version})")

    async with bus:
        await bus.publish(OrderPlaced(order_id="A3", amount_cents=4200, currency="USD"))
        await bus.drain()

        print("replay:")
        async for record in bus.replay(OrderPlaced, from_seq=first):
            event = record.event
            read_as = f"{type(event).__name__} v{event.__event_version__}"
            print(f"  seq {record.seq}: stored as v{record.version}, read as {read_as}: {event!r}")
    print(f"revenue subscription saw: {', '.join(totals)}")


async def main() -> None:
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    arg = sys.argv[1] if len(sys.argv) > 1 else ""
    with tempfile.TemporaryDirectory(prefix="eventbus-example-") as tmp:
        await run(store_url(arg, Path(tmp)))


if __name__ == "__main__":
    anyio.run(main)
