"""A child process for the projection crash test: projects `Counted` events into a table.

    python projection_child.py STORE_URL TABLE PLACEHOLDER LAST BACKEND

Runs a bus whose projection ``counter`` (from seq 1, or after its
checkpoint) inserts one row per event into TABLE in its delivery's
transaction, printing ``applied <n>`` before each commit, until it is
killed; after the event numbered LAST it stops the bus, which waits for
that delivery's commit, prints ``stopped`` and ends.
"""

from __future__ import annotations

import sys

import anyio

from eventbus import Event, EventBus, Transaction


class Counted(Event, name="eventbus.tests.projection.Counted"):
    n: int


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(url: str, table: str, placeholder: str, last: int) -> None:
    bus = EventBus(store=url, lease_ttl=1.0)

    @bus.subscribe(Counted, durable=True, name="counter", from_seq=1)
    async def count(event: Counted, tx: Transaction) -> None:
        await tx.execute(f"INSERT INTO {table} (n) VALUES ({placeholder})", event.n)
        say(f"applied {event.n}")
        if event.n == last:
            seen_last.set()

    seen_last = anyio.Event()
    async with bus:
        say("started")
        await seen_last.wait()
    say("stopped")  # leaving the block drained the bus: the last delivery has committed


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), backend=sys.argv[5])
