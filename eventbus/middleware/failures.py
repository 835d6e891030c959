"""What counts as a failed delivery.

An `Exception` from the handler is a failure. So is a cancellation that does
not come from the bus: on asyncio a handler awaiting a future that someone
else cancelled sees `CancelledError` although nobody cancelled the delivery.
A cancellation of the delivery's own scope (the bus shutting down, the
subscription closing, a timeout) is not a failure and must propagate, and
neither are `KeyboardInterrupt` and `SystemExit`.
"""

from __future__ import annotations

import math

import anyio

__all__ = ["is_failure"]


def is_failure(exc: BaseException) -> bool:
    """True when ``exc``, raised by a delivery step, ends that delivery as failed."""
    if isinstance(exc, Exception):
        return True
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        # the delivery's own scope was cancelled: that is the bus stopping it, not a failure
        return anyio.current_effective_deadline() != -math.inf
    return False
