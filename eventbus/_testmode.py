"""Hooks that `eventbus.testing.TestBus` sets for the run it controls.

Two context variables, read by the delivery steps they concern. A bus's
workers are tasks started by the task that enters ``async with bus``, and
tasks inherit context variables from the task that starts them, so values
set just before the bus starts hold for every delivery of that run, while
buses started from other tasks keep the defaults, which leave a bus as it
is in production.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import anyio

__all__ = ["failure_observer", "retry_sleep"]

retry_sleep: ContextVar[Callable[[float], Awaitable[None]]] = ContextVar("eventbus_retry_sleep", default=anyio.sleep)
"""What the retry step awaits between attempts, with the delay in seconds."""

failure_observer: ContextVar[Callable[[BaseException], None] | None] = ContextVar(
    "eventbus_failure_observer", default=None
)
"""Called with the final exception of a delivery that is about to become a
dead letter (after its last attempt); None: nobody is told."""
