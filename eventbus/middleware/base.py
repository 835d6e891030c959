"""The middleware contract: a delivery step that wraps the next one.

Shaped like Watermill's router middleware (``func(HandlerFunc) HandlerFunc``):
a middleware is called once per run of the bus, when a subscription's
pipeline is built, with the next step and a narrow `DeliveryContext` (the
subscription's name and the counters it may add to); it returns the step that
replaces it. Nothing is allocated per event beyond the steps' own coroutines.

```python
def timing(call_next: Handle, context: DeliveryContext) -> Handle:
    async def handle(record: Record) -> None:
        started = time.perf_counter()
        try:
            await call_next(record)
        finally:
            histogram.observe(context.name, time.perf_counter() - started)
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
from typing import Protocol

from ..handler import Handle
from ..record import Record

__all__ = ["Commit", "DeliveryContext", "DeliveryCounters", "Handle", "Middleware", "PublishMiddleware", "chain"]


class DeliveryCounters(Protocol):
    """The counts of a subscription that its delivery steps add to (the
    subscription's inbox keeps them; ``bus.stats()`` reports them)."""

    def retried(self) -> None:
        """A failed attempt is made again."""

    def dead_lettered(self) -> None:
        """A delivery ended as a dead letter."""


class DeliveryContext(Protocol):
    """What a delivery middleware learns of the subscription it wraps."""

    @property
    def name(self) -> str:
        """The subscription's name."""
        ...

    @property
    def counters(self) -> DeliveryCounters:
        """The subscription's counts, which a step may add to (``counters.retried()``)."""
        ...


Middleware = Callable[[Handle, DeliveryContext], Handle]
"""Wraps a delivery step: ``middleware(call_next, context) -> step``."""

Commit = Callable[[Sequence[Record]], Awaitable[None]]
"""A publish step: store and route a batch of records (seqs are set when it returns)."""

PublishMiddleware = Callable[[Commit], Commit]
"""Wraps a publish step: ``middleware(call_next) -> step``."""


def chain(handle: Handle, middleware: Sequence[Middleware], context: DeliveryContext) -> Handle:
    """Wrap ``handle`` so that ``middleware[0]`` is the outermost step."""
    for wrap in reversed(middleware):
        handle = wrap(handle, context)
    return handle
