"""The middleware contract: a delivery step that wraps the next one.

Shaped like Watermill's router middleware (``func(HandlerFunc) HandlerFunc``):
a middleware is called once, when a subscription is built, with the next step
and the subscription; it returns the step that replaces it. Nothing is
allocated per event beyond the steps' own coroutines.

```python
def timing(call_next: Handle, subscription: Subscription) -> Handle:
    async def handle(record: Record) -> None:
        started = time.perf_counter()
        try:
            await call_next(record)
        finally:
            histogram.observe(subscription.name, time.perf_counter() - started)
    return handle
```

Every delivery runs through one chain, outermost first:

    dead letters → bus middleware… → subscription middleware… → retry → timeout → handler

- Dead-lettering is outermost, so whatever escapes (the handler's last
  failure, or a middleware's own) ends as a dead letter, never in the worker.
- Your middleware sees one call per delivery, with the final outcome after
  all retries: right for tracing spans and metrics.
- Retry wraps timeout, so each attempt has its own time limit.

Publishes run through a second chain of `PublishMiddleware`, bus middleware
first, around the store append and routing of each batch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ..handler import Handle
from ..record import Record

if TYPE_CHECKING:
    from ..subscription import Subscription

__all__ = ["Commit", "Handle", "Middleware", "PublishMiddleware", "chain"]

Middleware = Callable[[Handle, "Subscription"], Handle]
"""Wraps a delivery step: ``middleware(call_next, subscription) -> step``."""

Commit = Callable[[Sequence[Record]], Awaitable[None]]
"""A publish step: store and route a batch of records (seqs are set when it returns)."""

PublishMiddleware = Callable[[Commit], Commit]
"""Wraps a publish step: ``middleware(call_next) -> step``."""


def chain(handle: Handle, middleware: Sequence[Middleware], subscription: Subscription) -> Handle:
    """Wrap ``handle`` so that ``middleware[0]`` is the outermost step."""
    for wrap in reversed(middleware):
        handle = wrap(handle, subscription)
    return handle
