"""Delivery and publish middleware: the contract and the built-in steps."""

from .base import Commit, DeliveryContext, Handle, Middleware, PublishMiddleware, chain
from .deadletter import dead_letter
from .retry import retry
from .timeout import timeout

__all__ = [
    "Commit",
    "DeliveryContext",
    "Handle",
    "Middleware",
    "PublishMiddleware",
    "chain",
    "dead_letter",
    "retry",
    "timeout",
]
