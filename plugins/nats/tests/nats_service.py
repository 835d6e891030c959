"""A service in a process of its own, for the NATS bridge's tests.

    python nats_service.py BACKEND ROLE STREAM DB [ORDERS]

Each role runs an `EventBus` on the SQLite file DB with a `NatsBridge` on
STREAM, prints ``ready`` once the bus runs, and then:

- ``shop``: sends ORDERS `OrderPlaced` (order ids ``0`` .. ``ORDERS-1``), takes
  in `PaymentCaptured`, and prints ``all paid`` and stops once every order
  has been paid at least once.
- ``billing``: takes in `OrderPlaced` and, in a durable subscription, pays
  each one with a `PaymentCaptured` it sends back; prints ``handled N``
  after every 500th order it handled in this run. Runs until killed.
- ``replica``: takes in `OrderPlaced` (as the service ``billing``) and prints
  ``got ORDER_ID`` for each one. Runs until killed.

Every line is flushed, so a parent that reads it knows it happened.
"""

from __future__ import annotations

import logging
import sys

import anyio
import structlog
from eventbus_nats import NatsBridge
from nats_events import OrderPlaced, PaymentCaptured
from nats_helpers import NATS_URL

from eventbus import EventBus

ACK_WAIT = 2.0
"""Seconds before JetStream delivers again what a killed process took and did not acknowledge."""
LEASE_TTL = 2.0
"""Seconds before a restarted process's forwarding subscription takes over the lease its killed predecessor held."""
_BATCH = 500


def _bus(db: str, bridge: NatsBridge) -> EventBus:
    # synchronous=normal: every commit survives the process being killed (not a power cut)
    return EventBus(store=f"sqlite:///{db}?synchronous=normal", plugins=[bridge], lease_ttl=LEASE_TTL)


async def shop(stream: str, db: str, orders: int) -> None:
    bridge = NatsBridge(
        NATS_URL, stream=stream, service="shop", outbound=[OrderPlaced], inbound=[PaymentCaptured], ack_wait=ACK_WAIT
    )
    bus = _bus(db, bridge)
    paid: set[str] = set()
    all_paid = anyio.Event()

    @bus.subscribe
    def collect(event: PaymentCaptured) -> None:
        paid.add(event.order_id)
        if len(paid) == orders:
            all_paid.set()

    async with bus:
        print("ready", flush=True)
        for first in range(0, orders, _BATCH):
            await bus.publish_many(OrderPlaced(order_id=str(n)) for n in range(first, min(first + _BATCH, orders)))
        await all_paid.wait()
        print("all paid", flush=True)


async def billing(stream: str, db: str) -> None:
    bridge = NatsBridge(
        NATS_URL, stream=stream, service="billing", outbound=[PaymentCaptured], inbound=[OrderPlaced], ack_wait=ACK_WAIT
    )
    bus = _bus(db, bridge)
    handled = 0

    @bus.subscribe(durable=True, name="pay")
    async def pay(event: OrderPlaced) -> None:
        nonlocal handled
        await bus.publish(PaymentCaptured(order_id=event.order_id))
        handled += 1
        if handled % _BATCH == 0:
            print("handled", handled, flush=True)

    async with bus:
        print("ready", flush=True)
        await anyio.sleep_forever()


async def replica(stream: str, db: str) -> None:
    bus = _bus(db, NatsBridge(NATS_URL, stream=stream, service="billing", inbound=[OrderPlaced], ack_wait=ACK_WAIT))

    @bus.subscribe
    def take(event: OrderPlaced) -> None:
        print("got", event.order_id, flush=True)

    async with bus:
        print("ready", flush=True)
        await anyio.sleep_forever()


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    backend, role, stream, db, *rest = sys.argv[1:]
    if role == "shop":
        anyio.run(shop, stream, db, int(rest[0]), backend=backend)
    elif role == "billing":
        anyio.run(billing, stream, db, backend=backend)
    else:
        anyio.run(replica, stream, db, backend=backend)


if __name__ == "__main__":
    main()
