"""eventbus: a typed, in-process event bus with an append-only store.

Events are pydantic models, handlers are plain functions registered with a
decorator, and every published event is kept in a store with a sequence
number, so history can be replayed, failures become dead letters, and slow
subscribers are governed by an explicit backpressure policy.
"""

from .bus import BusState, EventBus
from .deadletters import DeadLetter, DeadLetters
from .delivery.options import SubscribeOptions, SubscriptionOptions
from .event import Event, EventRegistry
from .exceptions import (
    BackpressureError,
    BusClosed,
    CausationLoopError,
    DuplicateEventType,
    DuplicateSubscription,
    EventBusError,
    EventDecodeError,
    HandlerTimeout,
    HistoryTruncated,
    LeaseLost,
    PluginError,
    PublishOutcomeUnknown,
    StoreError,
    StoreNotFound,
    TransactionError,
    UnknownEventType,
)
from .middleware import DeliveryContext, DeliveryCounters, Handle, Middleware, PublishMiddleware
from .plugins import Plugin
from .policies import Backpressure, Retry
from .projection import rebuild_projection
from .record import Record
from .replay import Replay
from .stats import BusStats, SubscriptionStats
from .store import CompactResult, MemoryStore, Retention, Store, StoreFeatures
from .subscription import Subscription
from .transaction import Transaction

__all__ = [
    "Backpressure",
    "BackpressureError",
    "BusClosed",
    "BusState",
    "BusStats",
    "CausationLoopError",
    "CompactResult",
    "DeadLetter",
    "DeadLetters",
    "DeliveryContext",
    "DeliveryCounters",
    "DuplicateEventType",
    "DuplicateSubscription",
    "Event",
    "EventBus",
    "EventBusError",
    "EventDecodeError",
    "EventRegistry",
    "Handle",
    "HandlerTimeout",
    "HistoryTruncated",
    "LeaseLost",
    "MemoryStore",
    "Middleware",
    "Plugin",
    "PluginError",
    "PublishMiddleware",
    "PublishOutcomeUnknown",
    "Record",
    "Replay",
    "Retention",
    "Retry",
    "Store",
    "StoreError",
    "StoreFeatures",
    "StoreNotFound",
    "SubscribeOptions",
    "Subscription",
    "SubscriptionOptions",
    "SubscriptionStats",
    "Transaction",
    "TransactionError",
    "UnknownEventType",
    "rebuild_projection",
]
__version__ = "0.1.0"
