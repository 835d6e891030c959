"""What counts as a failed delivery.

Whatever a delivery step raises fails that delivery (it is retried, then
dead-lettered), with three exceptions that must propagate instead:
`KeyboardInterrupt` and `SystemExit`, which stop the program, and a
cancellation of the delivery's own scope (the bus stopping, the subscription
closing, a timeout). A cancellation that does not come from the bus is a
failure like any other: on asyncio, a handler awaiting a future that someone
else cancelled sees `CancelledError` although nobody cancelled the delivery.
"""

from __future__ import annotations

import math

import anyio

__all__ = ["fatal_error", "is_failure"]


def is_failure(exc: BaseException) -> bool:
    """True when ``exc``, raised by a delivery step, ends that delivery as failed."""
    if isinstance(exc, Exception):
        return True
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return False
    # the delivery's own scope was cancelled: that is the bus stopping it, not a failure
    return anyio.current_effective_deadline() != -math.inf


def fatal_error(exc: BaseException) -> BaseException | None:
    """The `KeyboardInterrupt` or `SystemExit` in ``exc`` (looking into
    exception groups), which must stop the program, or None."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = fatal_error(inner)
            if found is not None:
                return found
    return None
