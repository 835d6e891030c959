"""Events and small helpers shared by the core bus tests.

Every event here is registered under a ``core.`` name, so no other test module
can collide with it in the process-wide registry.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import anyio

from eventbus import Event, MemoryStore, Record, Store

WAIT = 10.0
"""Upper bound, in seconds, on any wait in these tests (drain, events); a
healthy run never comes close."""


class Ping(Event, name="core.ping"):
    n: int


class Pong(Event, name="core.pong"):
    n: int


class Animal(Event, name="core.animal"):
    name: str


class Dog(Animal, name="core.dog"):
    pass


class Puppy(Dog, name="core.puppy"):
    pass


class Cat(Animal, name="core.cat"):
    pass


class Order(Event, name="core.order"):
    order_id: str
    amount: float


class Sink:
    """An async ``(event, record)`` handler that keeps what it was given.

    Its default subscription name would be ``"Sink"`` for every instance, so
    subscribe it with ``name=``.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.records: list[Record] = []

    async def __call__(self, event: Event, record: Record) -> None:
        self.events.append(event)
        self.records.append(record)

    @property
    def seqs(self) -> list[int]:
        return [record.seq for record in self.records]


class Gate:
    """Lets a test hold a handler inside its call: ``entered`` is set when a
    call starts, and every call waits until the test calls ``open()``."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self._open = anyio.Event()

    async def pass_through(self) -> None:
        self.entered.set()
        await self._open.wait()

    def open(self) -> None:
        self._open.set()


class CountingStore(MemoryStore):
    """A real `MemoryStore` that also keeps the size of every appended batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def append(self, records: Sequence[Record]) -> Collection[int]:
        self.batches.append(len(records))
        return await super().append(records)


async def stored(store: Store) -> list[Record]:
    """Every record in ``store``, in seq order."""
    return list(await store.read(1, limit=1_000_000))
