"""Delivery and publish middleware: the contract and the built-in steps."""

from .base import Commit, DeliveryContext, DeliveryCounters, Handle, Middleware, PublishMiddleware, chain
from .retry import retry
from .timeout import timeout

__all__ = [
    "Commit",
    "DeliveryContext",
    "DeliveryCounters",
    "Handle",
    "Middleware",
    "PublishMiddleware",
    "chain",
    "retry",
    "timeout",
]
