"""A child process for the crash tests: a bus on a SQLite file, publishing and handling durably.

    python sqlite_publisher.py URL BATCH_SIZE BACKEND

Runs an `EventBus` on the store URL with a durable subscription named
``audit`` (from seq 1) that prints ``handled SEQ`` for each tick it handles,
and publishes batches of ``BATCH_SIZE`` ticks with ``publish_many`` until
killed, printing ``ack FIRST LAST`` after each returns. Every line is
flushed, so a parent that reads it knows it happened; the bus's own log lines
go to stderr.
"""

from __future__ import annotations

import logging
import sys
from itertools import count

import anyio
import structlog

from eventbus import Event, EventBus, Record

AUDIT = "audit"
"""The name of the durable subscription."""


class Tick(Event, name="eventbus_sqlite.tests.publisher.Tick"):
    """The ``n``-th tick, published in batch number ``batch``."""

    batch: int
    n: int


def audit(event: Tick, record: Record) -> None:
    print("handled", record.seq, flush=True)


async def publish_ticks(url: str, batch_size: int) -> None:
    # a short lease: the test's restarted bus takes the killed one's over within a second
    bus = EventBus(store=url, lease_ttl=1.0)
    bus.subscribe(Tick, audit, durable=True, from_seq=1, name=AUDIT)
    async with bus:
        for batch in count():
            first = batch * batch_size
            seqs = await bus.publish_many(Tick(batch=batch, n=n) for n in range(first, first + batch_size))
            print("ack", seqs[0], seqs[-1], flush=True)


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    anyio.run(publish_ticks, sys.argv[1], int(sys.argv[2]), backend=sys.argv[3])
