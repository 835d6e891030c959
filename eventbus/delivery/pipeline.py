"""The handler pipeline: every delivery of a subscription runs through it.

It is built once per run of the bus, in one documented order (outermost
first):

    dead letters → bus middleware… → subscription middleware… → retry → timeout → [guard] → handler

where the guard is a leased subscription's alone (`Lease.guard`: no call
starts past the lease's deadline). It is the only code that sets
`current_record` (what publishing from inside a handler reads for
causation). A record whose ``where=`` or ``key=``
raised goes straight to dead letters, without retries. The dead-letter step
is the workers' ``except`` around the delivery they await (it ends a failure
with `Pipeline.fail`, which stores the letter with `eventbus.deadletters.bury`
and counts it), so it costs no coroutine; and an async
``(event)`` handler with nothing around it is called directly:
`Pipeline.deliver` hands back the handler's own coroutine, so the common case
costs one coroutine frame. A redrive (`eventbus.deadletters.DeadLetters`)
delivers through `Pipeline.redeliver`, below the dead-letter step, and ends
a failure itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._context import current_record
from .._testmode import failure_observer
from ..deadletters import LetterBox, bury
from ..handler import Handle, is_plain_async
from ..middleware.base import DeliveryCounters, Middleware, chain
from ..middleware.retry import retry
from ..middleware.timeout import timeout
from ..record import Record
from .options import SubscriptionOptions

__all__ = ["Guard", "Pipeline", "SubscriptionContext", "direct_handler"]


@dataclass(frozen=True)
class SubscriptionContext:
    """The `DeliveryContext` middleware receive: the subscription's name and counts."""

    name: str
    counters: DeliveryCounters


Guard = Callable[[Handle], Handle]
"""A step wrapped around each call of the handler, innermost (a lease's deadline check)."""


def direct_handler(
    handler: Callable[..., Any],
    options: SubscriptionOptions,
    middleware: Sequence[Middleware],
    guard: Guard | None = None,
) -> Callable[[Any], Awaitable[None]] | None:
    """The async ``(event)`` handler, when nothing wraps it (no timeout, retry,
    middleware or guard): the pipeline then calls it directly, else None."""
    plain = not (options.timeout or options.retry or middleware or options.middleware or guard)
    return handler if plain and is_plain_async(handler) else None


class Pipeline:
    """One subscription's delivery steps for one run of the bus.

    Args:
        handler: the user's handler.
        call: the innermost step calling it (`eventbus.handler.make_handle`).
        options: the subscription's options.
        middleware: the bus's delivery middleware (plugins' included).
        context: what middleware see of the subscription.
        store: where dead letters go (a projection's `LetterBox` stores them
            with its checkpoint).
        guard: wraps each call of the handler, inside retry and timeout, so
            that every attempt passes it (a leased subscription's
            `Lease.guard`); it takes the direct path away.
    """

    def __init__(
        self,
        handler: Callable[..., Any],
        call: Handle,
        options: SubscriptionOptions,
        middleware: Sequence[Middleware],
        context: SubscriptionContext,
        store: LetterBox,
        guard: Guard | None = None,
    ) -> None:
        self._context = context
        self._store = store
        self.direct = direct_handler(handler, options, middleware, guard)
        """The async ``(event)`` handler to call directly when nothing wraps it, else None."""
        self.enter = current_record.set
        """Make a record the current one (the only way it is set)."""
        inner = call if guard is None else guard(call)
        if options.timeout is not None:
            inner = timeout(options.timeout)(inner, context)
        if options.retry is not None:
            inner = retry(options.retry)(inner, context)
        self._inner = chain(inner, (*middleware, *options.middleware), context)

    def deliver(self, record: Record, rejection: Exception | None = None) -> Awaitable[None]:
        """Make ``record`` the current record and return the delivery to await:
        the handler's own coroutine on the direct path, else the chain's
        outermost step.

        The dead-letter step is the caller's: it ends what the awaitable
        raises with `fail` (when `is_failure` says it is one), in the
        ``except`` around the ``await``, which costs nothing when nothing
        fails, where a wrapping step would cost a coroutine per delivery.
        """
        self.enter(record)
        if rejection is not None:
            return self.fail(record, rejection)
        direct = self.direct
        if direct is None:
            return self._inner(record)
        event = record.decoded
        return direct(record.event if event is None else event)

    async def fail(self, record: Record, exc: BaseException) -> None:
        """End the delivery of ``record`` as a dead letter: store the letter and
        count it (once stored or given up on: the delivery is pending until then)."""
        if (observe := failure_observer.get()) is not None:
            observe(exc)
        await bury(self._store, self._context.name, record, exc)
        self._context.counters.dead_lettered()

    async def redeliver(self, record: Record) -> None:
        """Deliver ``record`` again, below the dead-letter step, as the current
        record only for the call (the caller's later publishes carry no
        causation from it); what the delivery raises is the redrive's to end."""
        token = current_record.set(record)
        try:
            await self._inner(record)
        finally:
            current_record.reset(token)
