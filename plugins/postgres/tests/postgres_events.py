"""Events shared by the PostgreSQL tests and the child processes they start."""

from __future__ import annotations

import time
from uuid import uuid4

from eventbus.event import Event
from eventbus.record import Record


class Tick(Event, name="eventbus_postgres.tests.Tick"):
    """The ``n``-th event of a writer, appended in its batch number ``batch``."""

    writer: int = 0
    batch: int = 0
    n: int


def tick_records(writer: int, first: int, count: int, batch: int = 0) -> list[Record]:
    """Records of ticks ``first`` .. ``first + count - 1`` of ``writer``, as the bus hands them over."""
    return [
        Record(0, Tick(writer=writer, batch=batch, n=n), Tick.__event_type__, 1, uuid4(), time.time_ns())
        for n in range(first, first + count)
    ]
