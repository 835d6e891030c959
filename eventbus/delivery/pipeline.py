"""The handler pipeline: every delivery of a subscription runs through it.

It is built once per run of the bus, in one documented order (outermost
first):

    dead letters → bus middleware… → subscription middleware… → retry → timeout → handler

and it is the only code that sets `current_record` (what publishing from
inside a handler reads for causation). A record whose ``where=`` or ``key=``
raised goes straight to dead letters, without retries. The dead-letter step
is the workers' ``except`` around the delivery they await (it ends a failure
with `Pipeline.fail`), so it costs no coroutine; and an async ``(event)``
handler with nothing around it is called directly: `Pipeline.deliver` hands
back the handler's own coroutine, so the common case costs one coroutine
frame.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._context import current_record
from ..deadletter import DeadLetter
from ..failures import is_failure
from ..handler import Handle, is_plain_async
from ..middleware.base import Middleware, chain
from ..middleware.deadletter import attempts_of, bury, fail
from ..middleware.retry import retry
from ..middleware.timeout import timeout
from ..record import Record
from ..stats import Counters
from ..store.base import Store
from .options import SubscriptionOptions

__all__ = ["Pipeline", "Redelivery", "SubscriptionContext"]


@dataclass(frozen=True)
class SubscriptionContext:
    """The `DeliveryContext` middleware receive: the subscription's name and counters."""

    name: str
    counters: Counters


class Redelivery(enum.Enum):
    """How a redriven dead letter ended."""

    DELIVERED = "delivered"
    """The handler succeeded: the old letter can go."""
    REPLACED = "replaced"
    """It failed again and a new letter (counting every attempt) is stored: the old one can go."""
    KEPT = "kept"
    """It failed again and the new letter could not be stored: the old one stays."""


class Pipeline:
    """One subscription's delivery steps for one run of the bus.

    Args:
        handler: the user's handler.
        call: the innermost step calling it (`eventbus.handler.make_handle`).
        options: the subscription's options.
        middleware: the bus's delivery middleware (plugins' included).
        context: what middleware see of the subscription.
        store: where dead letters go.
    """

    def __init__(
        self,
        handler: Callable[..., Any],
        call: Handle,
        options: SubscriptionOptions,
        middleware: Sequence[Middleware],
        context: SubscriptionContext,
        store: Store,
    ) -> None:
        self._context = context
        self._store = store
        plain = not (options.timeout or options.retry or middleware or options.middleware)
        self.direct: Callable[[Any], Awaitable[None]] | None = handler if plain and is_plain_async(handler) else None
        """The async ``(event)`` handler to call directly when nothing wraps it, else None."""
        self.enter = current_record.set
        """Make a record the current one (the only way it is set)."""
        inner = call
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
            return fail(self._context, self._store, record, rejection)
        direct = self.direct
        if direct is None:
            return self._inner(record)
        event = record.decoded
        return direct(record.event if event is None else event)

    async def fail(self, record: Record, exc: BaseException) -> None:
        """End the delivery of ``record`` as a dead letter."""
        await fail(self._context, self._store, record, exc)

    async def redeliver(self, letter: DeadLetter) -> Redelivery:
        """Deliver a dead letter's record again, below the dead-letter step, as
        the current record only for the call (the caller's later publishes
        carry no causation from it)."""
        token = current_record.set(letter.record)
        try:
            await self._inner(letter.record)
        except BaseException as exc:
            if not is_failure(exc):
                raise
            attempts = attempts_of(letter.record)
            stored = await bury(self._store, self._context.name, letter.record, exc, attempts, earlier=letter)
            return Redelivery.REPLACED if stored else Redelivery.KEPT
        finally:
            current_record.reset(token)
        return Redelivery.DELIVERED
