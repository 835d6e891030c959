"""Orders saved and announced in one transaction, and a read model kept exactly once.

    python examples/orders_outbox.py [DATABASE]

The shop keeps its ``orders`` table and the event store in one SQLite file.
Placing an order inserts the row and publishes ``OrderPlaced`` in the same
transaction (the outbox): both are stored, or neither. The projection
``orders-by-customer`` keeps a read model, ``customer_totals``, from those
events: its writes and its checkpoint commit together, so each order is
counted once, whatever stops the process.

The example starts the service, restarts it (the projection resumes after the
last order it counted), then rebuilds the read model from the history.
DATABASE is the path of a SQLite file (without it, a file in a temporary
directory); run it again on the same file and the totals keep adding up.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import tempfile
from pathlib import Path

import anyio
import structlog
from eventbus_sqlite import SqliteStore

from eventbus import Event, EventBus, Record, Transaction, rebuild_projection

CARD_LIMIT = 500.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT NOT NULL, amount REAL NOT NULL);
CREATE TABLE IF NOT EXISTS customer_totals (customer TEXT PRIMARY KEY, orders INTEGER NOT NULL, total REAL NOT NULL);
"""


class OrderPlaced(Event, name="shop.order_placed"):
    order_id: int
    customer: str
    amount: float


class PaymentDeclined(Exception):
    pass


def order_service(path: Path, applied: list[int]) -> EventBus:
    """The service as each process starts it: a bus on the shop's file, and its projection."""
    bus = EventBus(store=SqliteStore(path))

    # The parameter annotated Transaction makes this a projection: each event's
    # writes and the checkpoint past it commit in one transaction. from_seq=1:
    # the first start counts the orders placed before the projection existed.
    @bus.subscribe(durable=True, name="orders-by-customer", from_seq=1)
    async def count_order(event: OrderPlaced, record: Record, tx: Transaction) -> None:
        await tx.execute(
            "INSERT INTO customer_totals (customer, orders, total) VALUES (?, 1, ?) "
            "ON CONFLICT (customer) DO UPDATE SET orders = orders + 1, total = total + excluded.total",
            event.customer,
            event.amount,
        )
        applied.append(record.seq)

    return bus


async def place_order(bus: EventBus, db: sqlite3.Connection, customer: str, amount: float) -> None:
    """Insert the order and publish OrderPlaced in one transaction; charge the card before it commits."""
    try:
        async with bus.transaction(db) as tx:
            order_id = db.execute("INSERT INTO orders (customer, amount) VALUES (?, ?)", (customer, amount)).lastrowid
            assert order_id is not None
            seq = await tx.publish(OrderPlaced(order_id=order_id, customer=customer, amount=amount))
            if amount > CARD_LIMIT:  # the payment fails after both writes: the transaction rolls them back
                raise PaymentDeclined(f"{amount:.2f} is over the card limit")
    except PaymentDeclined as exc:
        print(f"  {customer}'s order of {amount:.2f} rolled back ({exc}): no row, no event")
        return
    print(f"  order {order_id}: {customer}, {amount:.2f}, published as seq {seq}")


async def clear_totals(tx: Transaction) -> None:
    """The read model's reset, which `rebuild_projection` runs in the checkpoint's transaction."""
    await tx.execute("DELETE FROM customer_totals")


def show_read_model(db: sqlite3.Connection) -> None:
    """Print the read model, and check it against the orders table it is computed from."""
    counted = db.execute("SELECT customer, orders, total FROM customer_totals ORDER BY customer").fetchall()
    for customer, orders, total in counted:
        print(f"    {customer:<6} {orders} orders  {total:8.2f}")
    placed = db.execute("SELECT customer, count(*), sum(amount) FROM orders GROUP BY customer ORDER BY customer")
    if counted != placed.fetchall():
        raise SystemExit("the read model disagrees with the orders table")
    print("  the read model agrees with the orders table: every order counted once")


async def run(path: Path) -> None:
    print(f"database: {path}")
    db = sqlite3.connect(path, isolation_level=None)  # autocommit: bus.transaction begins and ends transactions
    db.executescript(SCHEMA)
    try:
        print("first start")
        applied: list[int] = []
        async with order_service(path, applied) as bus:
            await place_order(bus, db, "ada", 120.0)
            await place_order(bus, db, "grace", 35.5)
            await place_order(bus, db, "ada", 980.0)
            await bus.drain()  # the projection has counted every committed order
        print(f"  the projection applied seqs {applied}")
        show_read_model(db)

        print("restart")
        applied = []
        async with order_service(path, applied) as bus:
            await place_order(bus, db, "ada", 15.0)
            await bus.drain()
        print(f"  the projection applied seqs {applied}: it resumed after its checkpoint")
        show_read_model(db)

        print("rebuild: the checkpoint back to 0 and the read model cleared, in one transaction")
        store = SqliteStore(path)  # no process may run the projection meanwhile: the rebuild takes its lease
        await store.open()
        try:
            await rebuild_projection(store, "orders-by-customer", clear_totals)
        finally:
            await store.close()
        applied = []
        async with order_service(path, applied) as bus:
            await bus.drain()
        print(f"  the projection applied seqs {applied} again, from the history")
        show_read_model(db)
    finally:
        db.close()


async def main() -> None:
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    with tempfile.TemporaryDirectory(prefix="eventbus-example-") as tmp:
        await run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp) / "shop.db")


if __name__ == "__main__":
    anyio.run(main)
