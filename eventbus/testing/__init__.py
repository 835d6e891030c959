"""Test helpers for people who write stores and test code that uses eventbus.

`StoreConformance` is the suite every `Store` runs in its own tests, with
`PersistentStoreConformance`, `SharedStoreConformance`,
`BoundedStoreConformance` and `RetentionStoreConformance` for the features a
store declares (see
*Writing a store* in the docs); `new_record` builds a record the way the bus
hands it to `Store.append`. This package needs pytest, from eventbus's
``test`` extra.
"""

from .conformance import (
    BoundedStoreConformance,
    PersistentStoreConformance,
    RetentionStoreConformance,
    SharedStoreConformance,
    StoreConformance,
    new_record,
)

__all__ = [
    "BoundedStoreConformance",
    "PersistentStoreConformance",
    "RetentionStoreConformance",
    "SharedStoreConformance",
    "StoreConformance",
    "new_record",
]
