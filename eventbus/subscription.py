"""`Subscription`: a handler registered on a bus, as its user sees it.

A thin façade: what a subscription does while the bus runs (its inbox,
catch-up, checkpoints, pipeline and workers) lives in `eventbus.delivery`,
in a `DeliveryRun` made afresh each time the bus starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .delivery.lease import LeaseTerms
from .delivery.options import SubscribeOptions, SubscriptionOptions, compile_where
from .delivery.projection import projection_store
from .delivery.workers import DeliveryRun
from .event import Event, registry
from .handler import Handle, ProjectionCall, event_types, handler_name, make_handle, transaction_parameter
from .middleware.base import Middleware
from .stats import SubscriptionStats
from .store.base import Store
from .transaction import Publishes

__all__ = ["Subscription", "new_subscription"]

_NEVER_RUN = SubscriptionStats(
    routed=0, delivered=0, failed=0, retried=0, dead_lettered=0, dropped=0, pending=0, position=0, behind=False
)


class Subscription:
    """A handler registered on a bus.

    Returned by ``bus.subscribe(EventType, handler)`` and found in
    ``bus.subscriptions[name]``. ``close()`` (or ``await aclose()``)
    unsubscribes it.

    Attributes:
        name: unique on its bus.
        types: the event classes it receives (subclasses included).
        handler: the function it calls.
        options: the validated options it was made with.
    """

    def __init__(
        self,
        types: tuple[type[Event], ...],
        handler: Callable[..., Any],
        options: SubscriptionOptions,
        unsubscribe: Callable[[Subscription], None],
    ) -> None:
        self.types = types
        self.handler = handler
        self.options = options
        self.name = options.name
        self._where = compile_where(options.where, types)
        self._call = _call_of(handler, options)
        self._unsubscribe = unsubscribe
        self._run: DeliveryRun | None = None
        self._closed = False

    def __repr__(self) -> str:
        names = ", ".join(cls.__event_type__ for cls in self.types)
        return f"<Subscription {self.name!r} on {names}>"

    @property
    def position(self) -> int:
        """The greatest seq up to which every routed event is finished."""
        return 0 if self._run is None else self._run.position

    @property
    def closed(self) -> bool:
        """True once `close` (or `aclose`) has been called."""
        return self._closed

    @property
    def run(self) -> DeliveryRun | None:
        """The subscription's deliveries in the bus's current (or last) run."""
        return self._run

    def stats(self) -> SubscriptionStats:
        """A snapshot of this subscription's counters in the bus's current (or last) run."""
        return _NEVER_RUN if self._run is None else self._run.stats()

    def close(self) -> None:
        """Unsubscribe: route nothing more here and stop the workers.

        Events still queued are not delivered; a durable subscription saves
        its position on the way out and resumes from there next time.
        """
        if self._closed:
            return
        self._closed = True
        self._unsubscribe(self)
        if self._run is not None:
            self._run.close()

    async def aclose(self) -> None:
        """`close`, then wait until the workers have stopped and the position is saved."""
        self.close()
        if self._run is not None:
            await self._run.stopped.wait()

    def check_store(self, store: Store) -> None:
        """`TransactionError` when this subscription is a projection and
        ``store`` takes part in no transactions (the bus asks before it starts)."""
        if isinstance(self._call, ProjectionCall):
            projection_store(store, self.name)

    def start_run(
        self,
        store: Store,
        middleware: Sequence[Middleware],
        head: Callable[[], int],
        on_fatal: Callable[[BaseException], None],
        lease_terms: LeaseTerms,
        publisher: Publishes,
    ) -> DeliveryRun:
        """A new `DeliveryRun` for a run of the bus (the bus starts its `run` task)."""
        names = registry.names_for(self.types)
        run = DeliveryRun(
            self.handler,
            self._call,
            self.options,
            names,
            self._where,
            middleware,
            store,
            head,
            on_fatal,
            lease_terms,
            publisher,
        )
        if self._closed:
            run.close()
        self._run = run
        return run


def _call_of(handler: Callable[..., Any], options: SubscriptionOptions) -> Handle | ProjectionCall:
    """How the workers call ``handler``: a projection's (one taking a
    `Transaction`) through a `ProjectionCall`, after checking that its
    options make one; any other through its `Handle`."""
    at = transaction_parameter(handler)
    if at is None:
        return make_handle(handler, in_thread=options.in_thread)
    problem = (
        "durable=True with a name=, so that its checkpoint commits with its writes"
        if not options.durable
        else "concurrency=1: one transaction at a time keeps its checkpoint in order"
        if options.concurrency != 1
        else "in_thread=False: it runs on the event loop, where its transaction's connection is"
        if options.in_thread
        else None
    )
    if problem is not None:
        raise ValueError(
            f"subscription {options.name!r} is a projection (its handler takes a Transaction), which needs {problem}"
        )
    return ProjectionCall(handler, at)


def new_subscription(
    spec: Any,
    handler: Callable[..., Any],
    name: str | None,
    options: SubscribeOptions,
    unsubscribe: Callable[[Subscription], None],
) -> Subscription:
    """A `Subscription` of ``handler`` to ``spec`` (an event class, a union or
    tuple of them, or None to read the handler's first annotation), named
    ``name`` or after the handler; `TypeError` / `ValueError` for what does
    not make one (see `EventBus.subscribe`)."""
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {handler!r}")
    classes = event_types(spec, handler)
    if options.get("durable") and name is None:
        raise ValueError(
            f"durable=True needs name=: the checkpoint of {handler_name(handler)!r} is saved under "
            "that name, which must stay the same across restarts"
        )
    name = name if name is not None else handler_name(handler)
    return Subscription(classes, handler, SubscriptionOptions(name=name, **options), unsubscribe)
