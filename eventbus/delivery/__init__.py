"""Delivery: everything between the bus routing a record to a subscription and
its handler returning, one concept per module.

- `inbox`: the bounded queue, the page of history, the backpressure policy,
  room and idle signals, and the counts: the state the bus, catch-up and
  the workers share, changed only through its verbs;
- `catchup`: reading history back from the store, then switching to live;
- `checkpoints`: loading and saving a durable subscription's position;
- `lease`: one process at a time delivering a durable subscription on a
  store shared between processes;
- `pipeline`: the handler pipeline (middleware, retry, timeout, dead letters);
- `recovery`: retrying the store calls a subscription cannot do without;
- `workers`: `DeliveryRun`, one run of a subscription, its position and its
  worker loops;
- `options`: the subscription options, written once.
"""

from .catchup import CatchUp, CatchUpState
from .checkpoints import CHECKPOINT_EVERY, CHECKPOINT_IDLE, Checkpoints
from .inbox import Inbox
from .lease import DEFAULT_LEASE_TTL, Lease, LeaseState, LeaseTerms
from .options import DEFAULT_MAX_PENDING, SubscribeOptions, SubscriptionOptions, compile_where
from .pipeline import Pipeline, SubscriptionContext
from .workers import DeliveryRun

__all__ = [
    "CHECKPOINT_EVERY",
    "CHECKPOINT_IDLE",
    "CatchUp",
    "CatchUpState",
    "Checkpoints",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_MAX_PENDING",
    "DeliveryRun",
    "Inbox",
    "Lease",
    "LeaseState",
    "LeaseTerms",
    "Pipeline",
    "SubscribeOptions",
    "SubscriptionContext",
    "SubscriptionOptions",
    "compile_where",
]
