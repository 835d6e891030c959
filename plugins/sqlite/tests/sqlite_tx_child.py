"""A child process for the transaction crash tests: publishes in its own SQLite transaction.

    python sqlite_tx_child.py PATH EVENT_ID WHEN BACKEND

Begins a transaction on its own `sqlite3.Connection` to the store's file,
inserts an order row and publishes `OrderPlaced` with EVENT_ID in it, then
prints ``published <seq>``. WHEN ``before``: it stops there, the transaction
open, reading stdin (the test kills it). WHEN ``after``: it commits, prints
``committed``, and then reads stdin.
"""

from __future__ import annotations

import sqlite3
import sys
from uuid import UUID

import anyio

from eventbus import Event, EventBus


class OrderPlaced(Event, name="eventbus_sqlite.tests.tx.OrderPlaced"):
    order_id: str


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(path: str, event_id: UUID, when: str) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    async with EventBus(store=f"sqlite:///{path}") as bus:
        async with bus.transaction(connection) as tx:
            connection.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY)")
            connection.execute("INSERT INTO orders (id) VALUES (?)", (event_id.hex,))
            seq = await tx.publish(OrderPlaced(order_id=event_id.hex), event_id=event_id)
            say(f"published {seq}")
            if when == "before":
                sys.stdin.readline()  # killed here, the transaction open
        say("committed")
        sys.stdin.readline()  # killed here


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], UUID(sys.argv[2]), sys.argv[3], backend=sys.argv[4])
