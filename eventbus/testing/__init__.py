"""Test helpers: `TestBus` for testing code that uses eventbus, and the store conformance kit.

`TestBus` runs an application's own bus in a test, on a store of the test's
own, and records what was published and dead-lettered. `Collector` is a
handler that keeps what it is given and waits for it, for a bus on a real
store. Importing them needs nothing beyond eventbus itself.

The store conformance suite (`StoreConformance`, `PersistentStoreConformance`,
`SharedStoreConformance`, `TransactionsConformance`, `new_record`, ...) is
for people who write stores. It
needs pytest, from eventbus's ``test`` extra, so it is imported from its own
module: ``from eventbus.testing.conformance import StoreConformance``.
"""

from ._collector import Collector
from .testbus import RunDeadLetters, TestBus

__all__ = ["Collector", "RunDeadLetters", "TestBus"]
