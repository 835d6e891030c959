"""Test helpers: `TestBus` for testing code that uses eventbus, and the store conformance kit.

`TestBus` runs an application's own bus in a test, on a store of the test's
own, and records what was published and dead-lettered. Importing it needs
nothing beyond eventbus itself.

The store conformance suite (`StoreConformance`, `PersistentStoreConformance`,
`SharedStoreConformance`, `new_record`) is for people who write stores. It
needs pytest, from eventbus's ``test`` extra, so it is imported from its own
module: ``from eventbus.testing.conformance import StoreConformance``.
"""

from .testbus import RunDeadLetters, TestBus

__all__ = ["RunDeadLetters", "TestBus"]
