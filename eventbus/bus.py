"""`EventBus`: the bus's lifecycle and its public face.

An `EventBus` is a `~eventbus.publishing.Publisher` (``publish``,
``publish_many``, ``ingest``); this module adds the lifecycle, subscribing,
replay and stats. Delivery lives in `eventbus.delivery`, routing and the
subscriptions' index in `eventbus.routing`.

The lifecycle is structured: ``async with bus`` enters a task group (last)
and starts one *run* task in it, which opens the store, starts the plugins
and the subscriptions' workers, and, once asked to stop, drains, stops the
workers, the plugins (in reverse order) and closes the store, undoing what
it did in one `AsyncExitStack`. Leaving ``async with`` and `EventBus.aclose`
only ask the run to stop and wait for it; the task group is exited by the
code that entered it. Each ``async with`` is a new run, so a bus can start
again after it stopped.
"""

from __future__ import annotations

import enum
import math
import threading
import types
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from types import MappingProxyType
from typing import Any, Concatenate, ParamSpec, TypeVar, Unpack, overload
from uuid import UUID

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from ._context import current_record
from ._log import logger
from ._stop import StopRequest
from ._weak import weak_method
from .deadletters import DeadLetters
from .delivery.lease import DEFAULT_LEASE_TTL, LeaseTerms, new_holder
from .delivery.options import SubscribeOptions
from .delivery.pipeline import Pipeline
from .delivery.workers import DeliveryRun
from .event import Event
from .exceptions import BusClosed
from .failures import fatal_error
from .handler import HandlerDecorator, is_type_spec
from .middleware.base import Middleware, PublishMiddleware
from .plugins import Plugin, load_plugin, run_plugins, start_plugins
from .publishing import DEFAULT_MAX_CAUSATION_DEPTH, ORIGIN_HEADER, Publisher
from .replay import Replay, type_names
from .routing import Router
from .stats import BusStats
from .store.base import Store
from .store.url import open_store
from .subscription import Subscription, new_subscription

__all__ = [
    "BusState",
    "DEFAULT_MAX_CAUSATION_DEPTH",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "EventBus",
    "ORIGIN_HEADER",
]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
E = TypeVar("E", bound=Event)
E1 = TypeVar("E1", bound=Event)
E2 = TypeVar("E2", bound=Event)

DEFAULT_SHUTDOWN_TIMEOUT = 30.0


class BusState(enum.Enum):
    """Where a bus is in its lifecycle (`EventBus.state`)."""

    STOPPED = "stopped"
    """Not running: new, or stopped after a run; ``async with`` starts it."""
    STARTING = "starting"
    """Opening the store, starting plugins and subscriptions."""
    RUNNING = "running"
    """Publishing and delivering."""
    DRAINING = "draining"
    """Asked to stop: still accepting publishes while the subscriptions finish their work."""
    STOPPING = "stopping"
    """Cancelling the workers, stopping the plugins, closing the store; publishes are refused."""


class EventBus(Publisher):
    """A typed event bus over an append-only store.

    ```python
    bus = EventBus()                              # MemoryStore
    bus = EventBus(store="sqlite:///events.db")   # with the eventbus-sqlite plugin

    @bus.subscribe
    async def ship(event: OrderPlaced) -> None: ...

    async with bus:
        seq = await bus.publish(OrderPlaced(order_id="A1", amount=120))
    ```

    Args:
        store: a `Store`, a store URL, or None for a new `MemoryStore`.
        plugins: `Plugin` objects or ``eventbus.plugins`` entry point names.
        middleware: delivery middleware for every subscription (outermost first).
        publish_middleware: middleware around every publish (outermost first).
        publish_timeout: seconds a publish may wait for room in a full
            ``"block"`` subscription before `BackpressureError` (None: no limit).
        max_causation_depth: how deep a chain of events published from
            handlers may grow before `CausationLoopError`.
        shutdown_timeout: seconds leaving ``async with`` waits for the
            subscriptions to drain before cancelling what is left (None: no limit).
        lease_ttl: on a store shared between processes, how long a durable
            subscription's lease lasts: the longest a stand-by in another
            process waits to take over from a holder that was killed (see
            "Several processes, one durable name" in the stores guide).
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        plugins: Iterable[Plugin | str] = (),
        middleware: Sequence[Middleware] = (),
        publish_middleware: Sequence[PublishMiddleware] = (),
        publish_timeout: float | None = None,
        max_causation_depth: int = DEFAULT_MAX_CAUSATION_DEPTH,
        shutdown_timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
        lease_ttl: float = DEFAULT_LEASE_TTL,
    ) -> None:
        if shutdown_timeout is not None and not shutdown_timeout >= 0:
            raise ValueError(f"shutdown_timeout must be >= 0 seconds, got {shutdown_timeout!r}")
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, (int, float)) or not 0 < lease_ttl < math.inf:
            raise ValueError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        self.store: Store = open_store(store)
        """The store; it may be replaced while the bus is stopped (each run opens the current one)."""
        self.plugins: tuple[Plugin, ...] = tuple(load_plugin(plugin) for plugin in plugins)
        self.middleware: tuple[Middleware, ...] = (*middleware, *(mw for p in self.plugins for mw in p.middleware))
        self.shutdown_timeout = shutdown_timeout
        self.lease_ttl = lease_ttl
        self._router = Router()
        super().__init__(
            self._router,
            publish_middleware=[*publish_middleware, *(mw for p in self.plugins for mw in p.publish_middleware)],
            publish_timeout=publish_timeout,
            max_causation_depth=max_causation_depth,
        )
        # The parts' callbacks into the bus, made once: weak, so that no part
        # holds the bus in a reference cycle (see eventbus._weak).
        self._stop_now = weak_method(self._stop_at_once)
        self._unsubscribe_now = weak_method(self._router.remove, _freed_bus_unsubscribe)
        self._head_now = weak_method(self._current_head)
        self._lease_holder = new_holder()
        self.dead_letters = DeadLetters(weak_method(self._current_store), weak_method(self._pipeline_of))
        self._state = BusState.STOPPED
        self._owner: AsyncExitStack | None = None
        self._runs: anyio.abc.TaskGroup | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stop = StopRequest()
        self._loop: tuple[anyio.lowlevel.EventLoopToken, int] | None = None
        """The running bus's event loop and the id of the thread running it (`publish_threadsafe`)."""

    def __repr__(self) -> str:
        return (
            f"<EventBus {self._state.value} store={type(self.store).__name__} subscriptions={len(self.subscriptions)}>"
        )

    # -- lifecycle -------------------------------------------------------------------

    @property
    def state(self) -> BusState:
        """Where the bus is in its lifecycle."""
        return self._state

    @property
    def running(self) -> bool:
        """True while the bus accepts publishes (running, or draining on the way out)."""
        return self._accepting

    def _enter(self, state: BusState) -> None:
        """Move to ``state``; publishes are accepted while running or draining."""
        self._state = state
        if state is BusState.RUNNING or state is BusState.DRAINING:
            self._accept_publishes()
        else:
            self._refuse_publishes(state.value)

    async def __aenter__(self) -> EventBus:
        if self._state is not BusState.STOPPED or self._owner is not None:
            raise RuntimeError(f"this bus is already {self._state.value}; a bus runs once at a time")
        self._enter(BusState.STARTING)
        self._stop = StopRequest()
        owner = AsyncExitStack()
        task_group = await owner.enter_async_context(anyio.create_task_group())
        self._task_group = task_group
        try:
            await task_group.start(self._run)
        except BaseException:
            # the run undid its own start-up; the task group holds no task
            self._enter(BusState.STOPPED)
            await owner.__aexit__(None, None, None)
            raise
        self._owner = owner
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        owner, self._owner = self._owner, None
        assert owner is not None
        graceful = exc is None or isinstance(exc, Exception)
        self._stop.ask(drain=graceful)
        try:
            if graceful:
                await owner.__aexit__(None, None, None)
            else:
                await owner.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            fatal = fatal_error(group)
            if fatal is not None:
                raise fatal from None
            raise
        fatal = self._stop.take_fatal()
        if fatal is not None:
            raise fatal

    def _stop_at_once(self, fatal: BaseException) -> None:
        """A handler raised `KeyboardInterrupt` or `SystemExit`: stop without
        draining, interrupting the ``async with`` body, which re-raises it."""
        self._stop.fail(fatal)
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Stop the bus and return once it has stopped, from any task.

        Drains first (up to ``shutdown_timeout``), then stops the workers, the
        plugins and closes the store. Deliveries still running at the timeout
        are cancelled: they were never marked done, so a durable subscription
        sees them again after a restart. Called from inside a handler, it asks
        the bus to stop and returns at once (it cannot wait for itself).
        """
        if self._state is BusState.STOPPED:
            return
        self._stop.ask(drain=True)
        if current_record.get() is None:
            await self._stop.stopped.wait()

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """One run of the bus, from opening the store to closing it."""
        self._loop = (anyio.lowlevel.current_token(), threading.get_ident())
        for sub in self.subscriptions.values():
            sub.check_store(self.store)  # before anything is opened
        try:
            async with AsyncExitStack() as resources:
                store = self.store
                await store.open()
                resources.push_async_callback(_shielded, store.close)
                store.hold_history(self._history_needed)
                self._begin_run(store, await store.head())
                await start_plugins(self.plugins, self, resources)
                async with anyio.create_task_group() as runs:
                    self._runs = runs
                    self._router.clear()
                    for sub in self.subscriptions.values():
                        await runs.start(self._start_run(sub).run)
                    self._enter(BusState.RUNNING)
                    task_status.started()
                    await run_plugins(self.plugins, self, self._stop.asked)
                    if self._stop.drain:
                        await self._drain_before_stop()
                    self._enter(BusState.STOPPING)
                    for sub in self.subscriptions.values():
                        if sub.run is not None:
                            sub.run.close()
        finally:
            self._runs = None
            self._loop = None
            self._enter(BusState.STOPPED)
            self._stop.stopped.set()

    async def _drain_before_stop(self) -> None:
        self._enter(BusState.DRAINING)
        try:
            await self.drain(self.shutdown_timeout)
        except TimeoutError:
            logger.warning(
                "shutdown timeout reached, cancelling unfinished deliveries",
                timeout=self.shutdown_timeout,
                pending={name: s.stats().pending for name, s in self.subscriptions.items()},
            )

    def _start_run(self, subscription: Subscription) -> DeliveryRun:
        terms = LeaseTerms(self._lease_holder, self.lease_ttl)
        return subscription.start_run(self.store, self.middleware, self._head_now, self._stop_now, terms, self)

    def _current_store(self) -> Store:
        return self.store

    def _history_needed(self) -> int | None:
        """What the store's compaction must keep: the lowest seq a running subscription may still read."""
        runs = (sub.run for sub in self.subscriptions.values() if sub.run is not None)
        return min((seq for seq in (run.needed_from() for run in runs) if seq is not None), default=None)

    # -- subscribing -----------------------------------------------------------------

    @property
    def subscriptions(self) -> Mapping[str, Subscription]:
        """The subscriptions by name (read-only)."""
        return self._router.subscriptions

    # One event class is checked: the handler must accept it, and ``where=`` and
    # ``key=`` are functions of it. A tuple is not (see docs/guide/subscribing.md).
    @overload
    def subscribe(
        self, event_type: type[E], /, *, name: str | None = ..., **options: Unpack[SubscribeOptions[E]]
    ) -> HandlerDecorator[E]: ...

    @overload
    def subscribe(
        self,
        event_type: types.UnionType | tuple[type[Event], ...] | None = ...,
        /,
        *,
        name: str | None = ...,
        **options: Unpack[SubscribeOptions],
    ) -> Callable[[F], F]: ...

    @overload
    def subscribe(self, handler: F, /) -> F: ...

    @overload
    def subscribe(
        self,
        event_type: type[E],
        handler: Callable[Concatenate[E, P], object],
        /,
        *,
        name: str | None = ...,
        **options: Unpack[SubscribeOptions[E]],
    ) -> Subscription: ...

    @overload
    def subscribe(
        self,
        event_type: types.UnionType | tuple[type[Event], ...] | None,
        handler: Callable[..., Any],
        /,
        *,
        name: str | None = ...,
        **options: Unpack[SubscribeOptions],
    ) -> Subscription: ...

    def subscribe(
        self,
        target: Any = None,
        handler: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        **options: Unpack[SubscribeOptions],
    ) -> Any:
        """Register a handler, as a bare decorator, a decorator with options,
        or a plain call ``bus.subscribe(EventType, handler, **options)`` that
        returns the `Subscription`. The decorators return the function unchanged.

        Args:
            target: the event class (a base class receives its subclasses; a
                ``Union`` or tuple subscribes to each member). Left out, it is
                read from the handler's first parameter annotation.
            handler: sync or async, taking ``(event)`` or ``(event, record)``.
                Given an event class, its first parameter must accept that
                class: type checkers report it otherwise, and so does this
                call, with `TypeError`, when that parameter is annotated
                with Event classes (guide: "Types catch mistakes").
            name: unique on the bus; defaults to the handler's qualified name.
            **options: see `SubscriptionOptions` (``where``, ``retry``,
                ``timeout``, ``max_pending``, ``backpressure``, ``concurrency``,
                ``key``, ``from_seq``, ``durable``, ``in_thread``, ``middleware``).

        Raises:
            BusClosed: the bus is stopping (draining or stopping). A stopped
                bus takes subscriptions for its next run.
        """
        if handler is not None:
            return self._add_subscription(target, handler, name, options)
        if target is not None and callable(target) and not is_type_spec(target):
            self._add_subscription(None, target, name, options)
            return target

        def decorator(func: F) -> F:
            self._add_subscription(target, func, name, options)
            return func

        return decorator

    def _add_subscription(
        self, spec: Any, handler: Callable[..., Any], name: str | None, options: SubscribeOptions
    ) -> Subscription:
        if self._state is BusState.DRAINING or self._state is BusState.STOPPING:
            raise BusClosed(f"cannot subscribe {name or handler!r}: the bus is {self._state.value}")
        subscription = new_subscription(spec, handler, name, options, self._unsubscribe_now)
        self._router.add(subscription)
        if self._runs is not None:
            self._runs.start_soon(self._start_run(subscription).run)
        return subscription

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """Run the bus for a web app's lifetime: ``FastAPI(lifespan=bus.lifespan)``,
        or any Starlette-style lifespan (a callable taking the app and
        returning an async context manager).

        The bus starts before the app takes requests and stops (draining,
        up to ``shutdown_timeout``) when the app shuts down, exactly as
        ``async with bus`` around the app's life would. ``app`` is not used.
        A bus that stopped runs again at the next start (each test that
        starts the app gets a fresh run).
        """
        async with self:
            yield

    # -- publishing from other threads -------------------------------------------------

    def publish_threadsafe(
        self, event: Event, headers: Mapping[str, str] | None = None, *, event_id: UUID | None = None
    ) -> int:
        """`publish` from synchronous code in another thread (a sync web view,
        a worker thread): blocks that thread until the event is stored, and
        returns its seq.

        The event is published on the bus's own event loop, exactly as
        ``await bus.publish(event, headers, event_id=event_id)`` would be
        there, so it raises what `publish` raises. Raises `BusClosed` when
        the bus is not running (or stops before the event is stored), and
        `RuntimeError` when called from the thread that runs the bus's event
        loop, which it would block: there, ``await bus.publish(...)``.
        """
        loop = self._loop
        if loop is None:
            raise BusClosed(f"cannot publish {type(event).__qualname__}: the bus is {self._state.value}")
        token, loop_thread = loop
        if threading.get_ident() == loop_thread:
            raise RuntimeError(
                "publish_threadsafe() was called from the thread running the bus's event loop, which it would "
                "block; use `await bus.publish(...)` there"
            )
        try:
            return anyio.from_thread.run(partial(self.publish, event, headers, event_id), token=token)
        except anyio.RunFinishedError:
            raise BusClosed(f"cannot publish {type(event).__qualname__}: the bus's event loop has ended") from None

    def _pipeline_of(self, name: str) -> Pipeline | None:
        sub = self.subscriptions.get(name)
        if sub is None or sub.run is None or not self.running:
            return None
        return sub.run.pipeline

    # -- draining --------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every subscription has finished (handled, dropped or
        dead-lettered) everything published so far, including what handlers
        publish meanwhile, or has closed. Raises `TimeoutError` after
        ``timeout`` seconds, and `RuntimeError` when called from inside a
        handler (it would wait for itself)."""
        if current_record.get() is not None:
            raise RuntimeError(
                "drain() was called from inside a handler: it would wait for that handler to finish; "
                "drain from outside the handlers"
            )
        with anyio.fail_after(timeout):
            while True:
                if self._appending:
                    await self._wait_appended()
                    continue
                busy = [run for sub in self.subscriptions.values() if (run := sub.run) and not run.is_idle()]
                if not busy:
                    return
                for run in busy:
                    await run.wait_idle()

    # -- history -------------------------------------------------------------------

    @overload
    def replay(self, event_type: type[E1], /, *, from_seq: int = 1, to_seq: int | None = None) -> Replay[E1]: ...

    @overload
    def replay(
        self, first: type[E1], second: type[E2], /, *, from_seq: int = 1, to_seq: int | None = None
    ) -> Replay[E1 | E2]: ...

    @overload
    def replay(self, *event_types: type[Event] | str, from_seq: int = 1, to_seq: int | None = None) -> Replay: ...

    def replay(self, *event_types: type[Event] | str, from_seq: int = 1, to_seq: int | None = None) -> Replay:
        """Stored records from ``from_seq`` to ``to_seq`` (inclusive), in seq order.

        ``event_types`` are classes (subclasses included) or type names; none
        means every record. Given one class (or two), type checkers know each
        ``record.event`` is an instance of it (of either). Streams page by
        page. A record that cannot be decoded raises `EventDecodeError` /
        `UnknownEventType` from the iteration; iterating again goes on after it.
        """
        if not self.running:
            raise BusClosed(f"cannot replay: the bus is {self._state.value}")
        return Replay(self.store, from_seq=from_seq, to_seq=to_seq, types=type_names(event_types))

    # -- observability -------------------------------------------------------------

    def stats(self) -> BusStats:
        """A snapshot of the bus's and every subscription's counters."""
        return BusStats(
            published=self._published,
            head=self.head,
            first_seq=self.store.first_seq,
            subscriptions=MappingProxyType({name: sub.stats() for name, sub in self.subscriptions.items()}),
        )


def _freed_bus_unsubscribe(subscription: Subscription) -> None:
    """Closing a subscription whose bus was freed: nothing routes to it any more."""


async def _shielded(close: Callable[[], Any]) -> None:
    with anyio.CancelScope(shield=True):
        await close()
