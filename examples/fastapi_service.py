"""An order service on FastAPI: the bus runs in the app's lifespan, a POST
endpoint publishes, a read model is rebuilt from replay at start-up, and a
health endpoint returns the bus's stats.

Serve it (``pip install fastapi uvicorn`` besides eventbus and its SQLite
plugin), from the ``examples/`` folder, on ``orders.db`` or ``$ORDERS_STORE``:

    uvicorn fastapi_service:app

Or take the tour:

    python examples/fastapi_service.py [STORE]

which serves the app with uvicorn on 127.0.0.1 (a free port), places orders
over HTTP, then restarts it on the same store and shows the read model
rebuilt from the stored events. STORE is a store URL or the path of a SQLite
file; without one, a file in a temporary directory. The tests of this app,
with `eventbus.testing.TestBus`, are in ``tests/test_fastapi_example.py``; the
guide that walks through it is ``docs/guide/fastapi.md``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
import structlog
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from eventbus import Event, EventBus, Retry

STORE_VARIABLE = "ORDERS_STORE"
DEFAULT_STORE = "sqlite:///orders.db"
CARD_LIMIT = 1_000.0


# -- the domain: events and what happens when they are published -------------------------
# --8<-- [start:domain]
class OrderPlaced(Event, name="orders.placed"):
    order_id: str
    customer: str
    amount: float


class PaymentCaptured(Event, name="orders.payment_captured"):
    order_id: str
    amount: float


class PaymentDeclined(Exception):
    """The (pretend) card processor refused the charge."""


async def charge(order_id: str, amount: float) -> None:
    """Stands in for a payment provider's API: amounts over the card limit are declined."""
    await anyio.lowlevel.checkpoint()
    if amount > CARD_LIMIT:
        raise PaymentDeclined(f"{order_id}: {amount:.2f} is over the card limit of {CARD_LIMIT:.2f}")


def build_bus(store: str | None = None) -> EventBus:
    """The service's bus with its handlers, on ``store`` ($ORDERS_STORE, else SQLite ``orders.db``).

    A declined payment is tried three times, then becomes a dead letter of
    the ``payments`` subscription.
    """
    bus = EventBus(store=store or os.environ.get(STORE_VARIABLE, DEFAULT_STORE))

    @bus.subscribe(name="payments", retry=Retry(attempts=3, backoff=0.2))
    async def capture_payment(event: OrderPlaced) -> None:
        await charge(event.order_id, event.amount)
        await bus.publish(PaymentCaptured(order_id=event.order_id, amount=event.amount))

    return bus


# --8<-- [end:domain]
# -- the read model ------------------------------------------------------------------------
# --8<-- [start:read-model]
class Order(BaseModel):
    """One order as the API shows it."""

    order_id: str
    customer: str
    amount: float
    status: Literal["placed", "paid"]


class OrderBook:
    """Every order's current state, in memory, built from the events alone.

    At start-up `rebuild` replays the stored history; from then on the
    ``order-book`` subscription applies each new event. Applying an event
    twice leaves the same state, so an event both replayed and delivered
    live does no harm.
    """

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}

    def apply(self, event: Event) -> None:
        """Bring the order ``event`` concerns up to date."""
        if isinstance(event, OrderPlaced):
            if event.order_id not in self.orders:
                self.orders[event.order_id] = Order(
                    order_id=event.order_id, customer=event.customer, amount=event.amount, status="placed"
                )
        elif isinstance(event, PaymentCaptured) and (order := self.orders.get(event.order_id)) is not None:
            self.orders[event.order_id] = order.model_copy(update={"status": "paid"})

    async def rebuild(self, bus: EventBus) -> int:
        """Replay the stored events up to the bus's head; return how many were applied.

        The ``order-book`` subscription delivers what is published after the
        bus started; the replay covers everything before.
        """
        self.orders.clear()
        applied = 0
        async for record in bus.replay(OrderPlaced, PaymentCaptured, to_seq=bus.head):
            self.apply(record.event)
            applied += 1
        return applied


# --8<-- [end:read-model]
# -- the web app ---------------------------------------------------------------------------
# --8<-- [start:app]
class NewOrder(BaseModel):
    """The body of ``POST /orders``."""

    order_id: str = Field(min_length=1)
    customer: str = Field(min_length=1)
    amount: float = Field(gt=0)


class Accepted(BaseModel):
    """What ``POST /orders`` answers: the order is stored; payment follows."""

    order_id: str
    seq: int


def create_app(bus: EventBus) -> FastAPI:
    """The FastAPI app around ``bus``.

    Its lifespan runs the bus (``async with bus``), unless the bus is already
    running: a test runs it under `eventbus.testing.TestBus` and then enters
    the lifespan, so the app works on the test's store. Either way the
    lifespan rebuilds the read model from replay before the app takes requests.
    """
    book = OrderBook()
    bus.subscribe((OrderPlaced, PaymentCaptured), book.apply, name="order-book")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if not bus.running:
                await stack.enter_async_context(bus)
            await book.rebuild(bus)
            yield

    app = FastAPI(title="orders", lifespan=lifespan)

    @app.post("/orders", status_code=202)
    async def place_order(order: NewOrder) -> Accepted:
        seq = await bus.publish(OrderPlaced(order_id=order.order_id, customer=order.customer, amount=order.amount))
        return Accepted(order_id=order.order_id, seq=seq)

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> Order:
        order = book.orders.get(order_id)
        if order is None:
            raise HTTPException(status_code=404, detail=f"no order {order_id!r}")
        return order

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "orders": len(book.orders), "bus": bus.stats().to_dict()}

    return app


app = create_app(build_bus())
"""The app ``uvicorn fastapi_service:app`` serves."""
# --8<-- [end:app]


# -- the tour ------------------------------------------------------------------------------


async def serve(store: str, visit: Callable[[httpx2.AsyncClient, EventBus], Awaitable[None]]) -> None:
    """Serve a fresh app on ``store`` with uvicorn on a free local port while ``visit`` uses it."""
    bus = build_bus(store)
    server = uvicorn.Server(uvicorn.Config(create_app(bus), log_level="warning"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # requests made before uvicorn has started wait in the backlog
        port = sock.getsockname()[1]
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve, [sock])
            async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await visit(client, bus)
            server.should_exit = True


async def first_run(client: httpx2.AsyncClient, bus: EventBus) -> None:
    for order_id, customer, amount in [("A1", "ada", 25.0), ("A2", "bob", 2_500.0), ("A3", "grace", 80.0)]:
        response = await client.post("/orders", json={"order_id": order_id, "customer": customer, "amount": amount})
        print(f"POST /orders {order_id} {amount:.2f} -> {response.status_code}")
    response = await client.post("/orders", json={"order_id": "A4", "customer": "eve", "amount": -5})
    print(f"POST /orders A4 -5.00 -> {response.status_code} ({response.json()['detail'][0]['msg']})")
    await bus.drain()  # let the handlers finish before reading the read model
    for order_id in ("A1", "A2", "A3", "A9"):
        response = await client.get(f"/orders/{order_id}")
        body = response.json()
        print(f"GET /orders/{order_id} -> {response.status_code} {body.get('status') or body['detail']}")
    health = (await client.get("/health")).json()
    for name, stats in health["bus"]["subscriptions"].items():
        print(
            f"GET /health: {name:<10} delivered={stats['delivered']} retried={stats['retried']} "
            f"dead_lettered={stats['dead_lettered']} pending={stats['pending']}"
        )
    letters = await bus.dead_letters.list()
    print(f"dead letters: {[f'{letter.subscription}: {letter.error_message}' for letter in letters]}")


async def second_run(client: httpx2.AsyncClient, bus: EventBus) -> None:
    health = (await client.get("/health")).json()
    print(f"restarted on the same store: the read model holds {health['orders']} orders, rebuilt by replay")
    for order_id in ("A1", "A2"):
        response = await client.get(f"/orders/{order_id}")
        print(f"GET /orders/{order_id} -> {response.status_code} {response.json()['status']}")


def store_url(arg: str, tmp: Path) -> str:
    """A store URL from the command line: a URL as is, a path as a SQLite file."""
    if not arg:
        return f"sqlite:///{tmp / 'orders.db'}"
    return arg if "://" in arg else f"sqlite:///{Path(arg).resolve()}"


async def main() -> None:
    # the library's retry and dead-letter lines go to stderr, the tour's own to stdout
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    with tempfile.TemporaryDirectory(prefix="eventbus-example-") as tmp:
        store = store_url(sys.argv[1] if len(sys.argv) > 1 else "", Path(tmp))
        print(f"store: {store}")
        print("first run")
        await serve(store, first_run)
        print("second run")
        await serve(store, second_run)


if __name__ == "__main__":
    anyio.run(main)
