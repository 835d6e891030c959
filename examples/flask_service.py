"""An order service on Flask, whose views are plain functions run in threads:
the bus runs on an event loop in a thread of its own, started with the app
and stopped after it, and the views publish with ``bus.publish_threadsafe``.

The same service as ``fastapi_service.py``, for a sync web framework. Serve
it (``pip install flask`` besides eventbus and its SQLite plugin), from the
``examples/`` folder, on ``orders.db`` or ``$ORDERS_STORE``:

    flask --app 'flask_service:serve_app()' run

Or take the tour:

    python examples/flask_service.py [STORE]

which serves the app with Werkzeug's threaded server on 127.0.0.1 (a free
port), places orders over HTTP, some from several threads at once, stops the
bus under the running server, then restarts the service on the same store
and shows the read model rebuilt from the stored events. STORE is a store URL
or the path of a SQLite file; without one, a file in a temporary directory.
The tests of this app are in ``tests/test_flask_example.py``; the guide that
walks through it is ``docs/guide/sync-frameworks.md``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
import structlog
from flask import Flask, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field, ValidationError
from werkzeug.serving import make_server

from eventbus import BusClosed, Event, EventBus, Retry

STORE_VARIABLE = "ORDERS_STORE"
DEFAULT_STORE = "sqlite:///orders.db"
CARD_LIMIT = 1_000.0
DRAIN_TIMEOUT = 10.0  # seconds; the tour's handlers finish in well under one


# -- the domain: events and what happens when they are published -------------------------
# Named apart from fastapi_service.py's events: type names are one namespace per process, and the tests load both.
class OrderPlaced(Event, name="webshop.order_placed"):
    order_id: str
    customer: str
    amount: float


class PaymentCaptured(Event, name="webshop.payment_captured"):
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


# -- the read model ------------------------------------------------------------------------
class Order(BaseModel):
    """One order as the API shows it."""

    order_id: str
    customer: str
    amount: float
    status: Literal["placed", "paid"]


class OrderBook:
    """Every order's current state, in memory, built from the events alone.

    Only the bus's loop writes it (`rebuild`, then the ``order-book``
    subscription); the views read it from their threads. Each change puts a
    new `Order` in the dict, never edits one in place, so a view reads an
    order either before or after a change, never half-way.
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
        """Replay the stored events up to the bus's head; return how many were applied."""
        self.orders.clear()
        applied = 0
        async for record in bus.replay(OrderPlaced, PaymentCaptured, to_seq=bus.head):
            self.apply(record.event)
            applied += 1
        return applied


# -- the bus's thread ----------------------------------------------------------------------
# --8<-- [start:thread]
class BusThread:
    """Runs a bus, and its read model, on an event loop in a thread of its own.

    `start` returns once the bus runs (store open, subscriptions started)
    and the read model is rebuilt from the history: start it before the app
    takes requests. `stop` stops the bus as leaving ``async with bus`` does
    (it drains, for at most the bus's ``shutdown_timeout``) and ends the
    thread: stop it after the server has stopped taking requests. From then
    on ``bus.publish_threadsafe`` raises `BusClosed`. A stopped `BusThread`
    can be started again.
    """

    def __init__(self, bus: EventBus, backend: str = "asyncio") -> None:
        self.bus = bus
        self.backend = backend  # the loop's: "asyncio" or "trio"
        self.book = OrderBook()
        bus.subscribe((OrderPlaced, PaymentCaptured), self.book.apply, name="order-book")
        self._resources = ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None

    def start(self) -> None:
        with ExitStack() as resources:  # undone if the bus fails to start
            portal = resources.enter_context(anyio.from_thread.start_blocking_portal(self.backend))
            resources.enter_context(portal.wrap_async_context_manager(self.bus))
            portal.call(self.book.rebuild, self.bus)
            self._resources = resources.pop_all()
            self._portal = portal

    @property
    def portal(self) -> anyio.from_thread.BlockingPortal:
        """Runs code on the bus's loop from another thread: ``runner.portal.call(bus.stats)``.

        Raises `BusClosed` when the thread is not running.
        """
        if self._portal is None:
            raise BusClosed("the bus's thread is not running")
        return self._portal

    def stop(self) -> None:
        self._portal = None
        self._resources.close()


# --8<-- [end:thread]
# -- the web app ---------------------------------------------------------------------------
# --8<-- [start:app]
class NewOrder(BaseModel):
    """The body of ``POST /orders``."""

    order_id: str = Field(min_length=1)
    customer: str = Field(min_length=1)
    amount: float = Field(gt=0)


def create_app(runner: BusThread) -> Flask:
    """The Flask app around the bus ``runner`` runs (started by the caller)."""
    bus, book = runner.bus, runner.book
    app = Flask("orders")

    @app.post("/orders")
    def place_order() -> ResponseReturnValue:
        try:
            order = NewOrder.model_validate(request.get_json(silent=True))
        except ValidationError as error:
            return {"detail": [{"loc": e["loc"], "msg": e["msg"]} for e in error.errors()]}, 422
        try:
            # blocks this request's thread until the event is stored; handlers run later, on the bus's loop
            seq = bus.publish_threadsafe(
                OrderPlaced(order_id=order.order_id, customer=order.customer, amount=order.amount)
            )
        except BusClosed as error:
            return {"detail": str(error)}, 503
        return {"order_id": order.order_id, "seq": seq}, 202

    @app.get("/orders/<order_id>")
    def get_order(order_id: str) -> ResponseReturnValue:
        order = book.orders.get(order_id)
        if order is None:
            return {"detail": f"no order {order_id!r}"}, 404
        return order.model_dump()

    @app.get("/health")
    def health() -> ResponseReturnValue:
        try:
            stats = runner.portal.call(bus.stats)  # read on the loop that updates them
        except BusClosed:
            return {"status": "stopped"}, 503
        return {"status": "ok", "orders": len(book.orders), "bus": stats.to_dict()}

    return app


def serve_app() -> Flask:
    """The app ``flask --app 'flask_service:serve_app()' run`` serves.

    Its bus runs in a thread from here until the process exits.
    """
    runner = BusThread(build_bus())
    runner.start()
    atexit.register(runner.stop)
    return create_app(runner)


# --8<-- [end:app]


# -- the tour ------------------------------------------------------------------------------
@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` with Werkzeug's threaded server (a thread per request) on a free local port; yield its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="werkzeug")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def call(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """One HTTP request with the standard library; return its status and JSON body."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


# --8<-- [start:lifecycle]
@contextmanager
def running_service(store: str) -> Iterator[tuple[BusThread, str]]:
    """The service on ``store`` as a deployment runs it: the bus starts before the server, and stops after it."""
    runner = BusThread(build_bus(store))
    runner.start()
    try:
        with serve(create_app(runner)) as url:
            yield runner, url
    finally:
        runner.stop()


# --8<-- [end:lifecycle]
def place_orders(url: str) -> None:
    for order_id, customer, amount in [("A1", "ada", 25.0), ("A2", "bob", 2_500.0), ("A3", "grace", 80.0)]:
        status, _ = call("POST", f"{url}/orders", {"order_id": order_id, "customer": customer, "amount": amount})
        print(f"POST /orders {order_id} {amount:.2f} -> {status}")
    status, body = call("POST", f"{url}/orders", {"order_id": "A4", "customer": "eve", "amount": -5})
    print(f"POST /orders A4 -5.00 -> {status} ({body['detail'][0]['msg']})")

    orders = [{"order_id": f"B{n}", "customer": "lin", "amount": 10.0 * n} for n in range(1, 9)]
    with ThreadPoolExecutor(max_workers=len(orders)) as pool:
        answers = list(pool.map(lambda order: call("POST", f"{url}/orders", order), orders))
    statuses = " ".join(str(status) for status, _ in answers)
    seqs = {body["seq"] for _, body in answers}
    print(f"POST /orders B1..B8 from 8 threads at once -> {statuses}; {len(seqs)} distinct seqs")


def first_run(runner: BusThread, url: str) -> None:
    place_orders(url)
    runner.portal.call(runner.bus.drain, DRAIN_TIMEOUT)  # let the handlers finish before reading the read model
    for order_id in ("A1", "A2", "A3", "A9", "B8"):
        status, body = call("GET", f"{url}/orders/{order_id}")
        print(f"GET /orders/{order_id} -> {status} {body.get('status') or body['detail']}")
    _, health = call("GET", f"{url}/health")
    for name, stats in health["bus"]["subscriptions"].items():
        print(
            f"GET /health: {name:<10} delivered={stats['delivered']} retried={stats['retried']} "
            f"dead_lettered={stats['dead_lettered']} pending={stats['pending']}"
        )
    letters = runner.portal.call(runner.bus.dead_letters.list)
    print(f"dead letters: {[f'{letter.subscription}: {letter.error_message}' for letter in letters]}")

    runner.stop()  # before the server, only to show what the views then answer
    status, body = call("POST", f"{url}/orders", {"order_id": "A5", "customer": "ada", "amount": 5})
    print(f"bus stopped: POST /orders A5 -> {status} ({body['detail']})")
    status, body = call("GET", f"{url}/health")
    print(f"bus stopped: GET /health -> {status} {body['status']}")


def second_run(runner: BusThread, url: str) -> None:
    _, health = call("GET", f"{url}/health")
    print(f"restarted on the same store: the read model holds {health['orders']} orders, rebuilt by replay")
    for order_id in ("A1", "A2"):
        status, body = call("GET", f"{url}/orders/{order_id}")
        print(f"GET /orders/{order_id} -> {status} {body['status']}")


def store_url(arg: str, tmp: Path) -> str:
    """A store URL from the command line: a URL as is, a path as a SQLite file."""
    if not arg:
        return f"sqlite:///{tmp / 'orders.db'}"
    return arg if "://" in arg else f"sqlite:///{Path(arg).resolve()}"


def main() -> None:
    # the library's retry and dead-letter lines go to stderr, the tour's own to stdout
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    with tempfile.TemporaryDirectory(prefix="eventbus-example-") as tmp:
        store = store_url(sys.argv[1] if len(sys.argv) > 1 else "", Path(tmp))
        print(f"store: {store}")
        print("first run")
        with running_service(store) as (runner, url):
            first_run(runner, url)
        print("second run")
        with running_service(store) as (runner, url):
            second_run(runner, url)


if __name__ == "__main__":
    main()
