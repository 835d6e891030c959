"""`Collector`: a handler that keeps what it is given, and waits for it."""

from __future__ import annotations

import anyio

from ..event import Event
from ..record import Record

__all__ = ["Collector"]


class Collector:
    """A handler that keeps the records it is given, in order, and lets a test
    wait for a number of them, with a bounded timeout instead of a sleep.

    ```python
    seen = Collector()
    bus.subscribe(OrderPlaced, seen, name="seen", from_seq=1)
    ...
    await seen.wait_for(3)               # TimeoutError after `timeout` seconds
    assert [r.seq for r in seen.records] == [1, 2, 3]
    ```

    Useful where `TestBus` is not: a bus on a real store, events that other
    processes or transactions append.

    Args:
        timeout: seconds `wait_for` waits at most, unless it is given its own.

    Attributes:
        records: every record handed over so far, in the order it came.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.records: list[Record] = []
        self._timeout = timeout
        self._changed = anyio.Event()

    def __repr__(self) -> str:
        return f"<Collector of {len(self.records)} records>"

    async def __call__(self, event: Event, record: Record) -> None:
        """Keep ``record`` (the handler ``bus.subscribe`` calls)."""
        self.records.append(record)
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def events(self) -> list[Event]:
        """The events of `records`, in the same order."""
        return [record.event for record in self.records]

    async def wait_for(self, count: int, timeout: float | None = None) -> None:
        """Return once at least ``count`` records were handed over; `TimeoutError`
        after ``timeout`` seconds (the collector's own by default)."""
        with anyio.fail_after(self._timeout if timeout is None else timeout):
            while len(self.records) < count:
                await self._changed.wait()
