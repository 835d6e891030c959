"""A child process for the lease tests: one replica of a service running a durable subscription.

    python lease_worker.py URL LEASE_TTL BACKEND

Runs an `EventBus` on the store URL with the durable subscription ``audit``
(from seq 1, ``lease_ttl=LEASE_TTL``), prints ``ready`` once the bus runs,
``handled SEQ`` for each `Beat` it handles and ``log MESSAGE`` for each line
the bus logs at info level or above (a lease taken, lost, standing by),
every line flushed, and runs until it is killed.
"""

from __future__ import annotations

import logging
import sys

import anyio

from eventbus import Event, EventBus, Record

AUDIT = "audit"
"""The name of the durable subscription every replica runs."""


class Beat(Event, name="eventbus.tests.leases.Beat"):
    """The ``n``-th beat a test publishes."""

    n: int


def audit(event: Beat, record: Record) -> None:
    print("handled", record.seq, flush=True)


class _PrintLogs(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print("log", record.getMessage(), flush=True)


async def run_replica(url: str, lease_ttl: float) -> None:
    logging.getLogger("eventbus").addHandler(_PrintLogs(logging.INFO))
    logging.getLogger("eventbus").setLevel(logging.INFO)
    bus = EventBus(store=url, lease_ttl=lease_ttl)
    bus.subscribe(Beat, audit, durable=True, from_seq=1, name=AUDIT)
    async with bus:
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(run_replica, sys.argv[1], float(sys.argv[2]), backend=sys.argv[3])
