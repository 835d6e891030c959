"""The exceptions eventbus raises, one hierarchy under `EventBusError`.

```
EventBusError
├── BusClosed                 publish/subscribe on a bus that is not running
├── BackpressureError         a "block" subscription stayed full past publish_timeout
├── CausationLoopError        a causation chain grew past max_causation_depth
├── DuplicateEventType        two classes claim one event name and version
├── DuplicateSubscription     two subscriptions claim one name on a bus
├── HandlerTimeout            a handler attempt ran past its subscription's timeout
├── EventDecodeError          a stored event could not be turned back into its class
│   └── UnknownEventType      ... because no class is registered under its name
├── HistoryTruncated          a read asked for records that retention already removed
├── TransactionError          a publish in a transaction cannot go ahead (see its docstring)
├── StoreError                a store failed or was given something it cannot hold
│   ├── LeaseLost             a fenced save came after another process took the lease
│   ├── PublishOutcomeUnknown a store cannot tell whether an append was stored
│   └── StoreNotFound         no store is installed for a URL's scheme
└── PluginError               a bus plugin could not be found or failed to start
```

Misuse of arguments raises the built-in `TypeError` / `ValueError`, as the
standard library does; these classes are for what goes wrong at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

__all__ = [
    "BackpressureError",
    "BusClosed",
    "CausationLoopError",
    "DuplicateEventType",
    "DuplicateSubscription",
    "EventBusError",
    "EventDecodeError",
    "HandlerTimeout",
    "HistoryTruncated",
    "LeaseLost",
    "PluginError",
    "PublishOutcomeUnknown",
    "StoreError",
    "StoreNotFound",
    "TransactionError",
    "UnknownEventType",
]


class EventBusError(Exception):
    """Base class of every error eventbus raises on its own account."""


class BusClosed(EventBusError):
    """The bus is not running: it was never started, or it has been closed."""


class BackpressureError(EventBusError):
    """A subscription with ``backpressure="block"`` stayed full for longer than
    the bus's ``publish_timeout``. The event was not stored."""


class CausationLoopError(EventBusError):
    """An event published from a handler would make the causation chain deeper
    than the bus's ``max_causation_depth``; usually handlers feeding each other
    in a loop."""


class DuplicateEventType(EventBusError):
    """Two different event classes were registered under one name and version."""


class DuplicateSubscription(EventBusError):
    """A subscription name is already taken on this bus."""


class EventDecodeError(EventBusError):
    """A stored event could not be decoded: its payload no longer validates
    against its class, or no upcaster leads from its stored version."""

    def __init__(self, message: str, *, seq: int | None = None, type: str | None = None) -> None:
        super().__init__(message)
        self.seq = seq
        self.type = type


class UnknownEventType(EventDecodeError):
    """No event class is registered under a stored (or requested) type name."""


class HistoryTruncated(EventBusError):
    """A read asked for records below the store's first retained seq: retention
    (a `MemoryStore`'s ``max_records``, a durable store's ``retention=``, or
    ``compact()``) has removed them.

    Raised by `Store.read`, and so by ``bus.replay`` and `Replay`, whenever the
    range asked for begins below ``first_seq``. Nothing is returned for such a
    read: ask again from ``first_seq`` to get what is left.

    Attributes:
        first_seq: the first seq the store still holds (read from here).
        requested: the seq that was asked for.
    """

    def __init__(self, message: str, *, first_seq: int, requested: int) -> None:
        super().__init__(message)
        self.first_seq = first_seq
        self.requested = requested


class TransactionError(EventBusError):
    """A publish in the application's transaction cannot go ahead; nothing was written.

    Raised by ``publish(..., transaction=conn)``, ``publish_many`` and
    `EventBus.transaction` when the store does not take part in transactions
    (the `MemoryStore`), when ``conn`` is not a connection the store can
    append through (another driver, another database than the store's), when
    no transaction is open on it (or one is, for `EventBus.transaction`),
    and by a plain publish from a task that holds such a transaction open,
    which would otherwise wait for that transaction's own lock forever.
    """


class StoreError(EventBusError):
    """A store failed, refused its input, or could not be opened."""


class LeaseLost(StoreError):
    """A fenced checkpoint save was refused: another holder has taken the
    subscription's lease since the saving process acquired it.

    Raised by `Store.save_checkpoints` called with a ``fence`` whose token is
    no longer the lease's (see `LeaseFence`); nothing was saved. The bus
    handles it itself: the subscription stops delivering and stands by.

    Attributes:
        name: the lease's (the durable subscription's) name.
        token: the fencing token the refused save carried.
    """

    def __init__(self, message: str, *, name: str, token: int) -> None:
        super().__init__(message)
        self.name = name
        self.token = token


class PublishOutcomeUnknown(StoreError):
    """A store lost its connection while committing an append and could not
    find out within its bounded time whether the append was stored.

    It is the one error after which the events may or may not be stored. A
    store that can tell raises nothing (the append was stored) or a plain
    `StoreError` (it was not). Publishing again with the same ids is safe:
    an id that is already stored is not stored twice, and its stored seq is
    returned (``bus.publish(event, event_id=error.event_ids[0])``,
    ``bus.publish_many(events, event_ids=error.event_ids)``).

    Attributes:
        event_ids: the ids of the events whose append is in doubt, in the
            order they were published.
    """

    def __init__(self, message: str, *, event_ids: Sequence[UUID]) -> None:
        super().__init__(message)
        self.event_ids = tuple(event_ids)

    def narrowed(self, event_ids: Sequence[UUID]) -> PublishOutcomeUnknown:
        """This error as told to one publisher whose events are ``event_ids``
        among those in doubt (several publishers shared the append); it is
        the new error's ``__cause__``."""
        narrowed = PublishOutcomeUnknown(
            f"{self}; {len(event_ids)} of the events in doubt are this publish's", event_ids=event_ids
        )
        narrowed.__cause__ = self
        return narrowed


class StoreNotFound(StoreError):
    """No store is registered for the scheme of a store URL."""


class PluginError(EventBusError):
    """A bus plugin named by string is not installed, or failed in its lifecycle."""


class HandlerTimeout(EventBusError, TimeoutError):
    """A handler attempt ran past its subscription's ``timeout``; it is retried
    or dead-lettered like any other failure. Also a built-in `TimeoutError`."""
