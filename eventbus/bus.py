"""`EventBus`: publish, subscribe, replay, and the bus lifecycle.

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
import logging
import math
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from time import time_ns
from types import MappingProxyType
from typing import Any, TypeVar, Unpack, overload
from uuid import UUID

import anyio
import anyio.abc

from ._context import current_record
from ._entry import Item, causation_of, seq_of, type_of
from ._ids import first_id
from ._log import logger
from ._weak import weak_method
from .commit import GroupCommit
from .deadletters import DeadLetters
from .delivery.inbox import Inbox, offer
from .delivery.lease import DEFAULT_LEASE_TTL, LeaseTerms, new_holder
from .delivery.options import SubscribeOptions, SubscriptionOptions
from .delivery.pipeline import Pipeline
from .delivery.workers import DeliveryRun
from .event import Event, registry
from .exceptions import BackpressureError, BusClosed, CausationLoopError, DuplicateSubscription
from .failures import fatal_error
from .handler import event_types, handler_name
from .middleware.base import Commit, Middleware, PublishMiddleware
from .plugins import Plugin, load_plugin
from .record import NO_HEADERS, Record
from .replay import Replay
from .routing import Route, Router
from .stats import BusStats
from .store.base import Store
from .store.url import open_store
from .subscription import Subscription

__all__ = [
    "BusState",
    "DEFAULT_MAX_CAUSATION_DEPTH",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "EventBus",
    "INGEST_WINDOW",
    "ORIGIN_HEADER",
]

F = TypeVar("F", bound=Callable[..., Any])
E1 = TypeVar("E1", bound=Event)
E2 = TypeVar("E2", bound=Event)

DEFAULT_MAX_CAUSATION_DEPTH = 64
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
INGEST_WINDOW = 100_000
"""How many of the most recently ingested event ids a bus remembers in one run:
`EventBus.ingest` of an id among them appends nothing again."""
ORIGIN_HEADER = "origin"
"""The header `EventBus.ingest` sets to where an event came from."""


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


_RUNNING = BusState.RUNNING
_DRAINING = BusState.DRAINING
_current_record = current_record.get
"""Bound once: CPython does not specialize loading a `ContextVar`'s method,
so ``current_record.get()`` on every publish would look it up the slow way."""


class EventBus:
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

    # Slotted: every publish reads a handful of these, and CPython 3.11 reads an
    # instance attribute the fast way only while the instance holds at most 30
    # (past that its dict is no longer shared, and each read looks the name up).
    __slots__ = (
        "__weakref__",
        "_commit",
        "_crowded",
        "_drain_on_stop",
        "_fatal",
        "_head",
        "_head_now",
        "_ingested",
        "_lease_holder",
        "_log_publishes",
        "_next_id",
        "_owner",
        "_publish_chain",
        "_published",
        "_router",
        "_routes",
        "_runs",
        "_state",
        "_stop_now",
        "_stop_requested",
        "_stopped",
        "_subscriptions",
        "_task_group",
        "_unsubscribe_now",
        "dead_letters",
        "lease_ttl",
        "max_causation_depth",
        "middleware",
        "plugins",
        "publish_timeout",
        "shutdown_timeout",
        "store",
    )

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
        if publish_timeout is not None and not publish_timeout > 0:
            raise ValueError(f"publish_timeout must be a positive number of seconds, got {publish_timeout!r}")
        if shutdown_timeout is not None and not shutdown_timeout >= 0:
            raise ValueError(f"shutdown_timeout must be >= 0 seconds, got {shutdown_timeout!r}")
        if isinstance(max_causation_depth, bool) or not isinstance(max_causation_depth, int) or max_causation_depth < 1:
            raise ValueError(f"max_causation_depth must be an int >= 1, got {max_causation_depth!r}")
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, (int, float)) or not 0 < lease_ttl < math.inf:
            raise ValueError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        self.store: Store = open_store(store)
        """The store; it may be replaced while the bus is stopped (each run opens the current one)."""
        self.plugins: tuple[Plugin, ...] = tuple(load_plugin(plugin) for plugin in plugins)
        self.middleware: tuple[Middleware, ...] = (
            *middleware,
            *(mw for plugin in self.plugins for mw in plugin.middleware),
        )
        wrappers = [*publish_middleware, *(mw for p in self.plugins for mw in p.publish_middleware)]
        # without publish middleware, a publish the store takes at once skips a coroutine
        # The parts' callbacks into the bus, made once: weak, so that no part
        # holds the bus in a reference cycle (see eventbus._weak).
        self._head_now = weak_method(self._current_head)
        self._stop_now = weak_method(self._stop_at_once)
        self._unsubscribe_now = weak_method(self._unsubscribe, _freed_bus_unsubscribe)
        self._commit = GroupCommit(weak_method(self._accepted), at_once=not wrappers)
        publish_chain: Commit = self._commit.commit
        for wrap in reversed(wrappers):
            publish_chain = wrap(publish_chain)
        self._publish_chain = publish_chain
        self.publish_timeout = publish_timeout
        self.max_causation_depth = max_causation_depth
        self.shutdown_timeout = shutdown_timeout
        self.lease_ttl = lease_ttl
        self._lease_holder = new_holder()
        self.dead_letters = DeadLetters(weak_method(self._current_store), weak_method(self._pipeline_of))
        self._router = Router()
        self._routes = self._router.routes
        self._crowded = self._router.crowded
        self._subscriptions: dict[str, Subscription] = {}
        self._next_id = first_id()
        self._head = 0
        self._published = 0
        self._state = BusState.STOPPED
        self._owner: AsyncExitStack | None = None
        self._runs: anyio.abc.TaskGroup | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stop_requested = anyio.Event()
        self._drain_on_stop = True
        self._stopped = anyio.Event()
        self._fatal: BaseException | None = None
        self._ingested: dict[UUID, int] = {}
        self._log_publishes = False

    def __repr__(self) -> str:
        return (
            f"<EventBus {self._state.value} store={type(self.store).__name__} subscriptions={len(self._subscriptions)}>"
        )

    # -- lifecycle -------------------------------------------------------------------

    @property
    def state(self) -> BusState:
        """Where the bus is in its lifecycle."""
        return self._state

    @property
    def running(self) -> bool:
        """True while the bus accepts publishes (running, or draining on the way out)."""
        return self._state is _RUNNING or self._state is _DRAINING

    @property
    def head(self) -> int:
        """The newest seq this bus has appended or found in its store."""
        return self._head

    async def __aenter__(self) -> EventBus:
        if self._state is not BusState.STOPPED or self._owner is not None:
            raise RuntimeError(f"this bus is already {self._state.value}; a bus runs once at a time")
        self._state = BusState.STARTING
        self._stop_requested = anyio.Event()
        self._stopped = anyio.Event()
        self._drain_on_stop = True
        self._fatal = None
        self._ingested = {}
        owner = AsyncExitStack()
        task_group = await owner.enter_async_context(anyio.create_task_group())
        self._task_group = task_group
        try:
            await task_group.start(self._run)
        except BaseException:
            # the run undid its own start-up; the task group holds no task
            self._state = BusState.STOPPED
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
        self._request_stop(drain=graceful)
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
        if self._fatal is not None:
            fatal, self._fatal = self._fatal, None
            raise fatal

    def _stop_at_once(self, fatal: BaseException) -> None:
        """A handler raised `KeyboardInterrupt` or `SystemExit`: stop without
        draining, interrupting the ``async with`` body, which re-raises it."""
        if self._fatal is None:
            self._fatal = fatal
        self._request_stop(drain=False)
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
        self._request_stop(drain=True)
        if _current_record() is None:
            await self._stopped.wait()

    def _request_stop(self, *, drain: bool) -> None:
        if not self._stop_requested.is_set():
            self._drain_on_stop = drain
            self._stop_requested.set()
        elif not drain:
            self._drain_on_stop = False

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """One run of the bus, from opening the store to closing it."""
        try:
            async with AsyncExitStack() as resources:
                store = self.store
                await store.open()
                resources.push_async_callback(_shielded, store.close)
                store.hold_history(self._history_needed)
                self._head = await store.head()
                self._commit.store = store
                for plugin in self.plugins:
                    await plugin.start(self)
                    resources.push_async_callback(self._stop_plugin, plugin)
                # Asked once per run, not per publish: the check costs more than a publish.
                self._log_publishes = logger.is_enabled_for(logging.DEBUG)
                async with anyio.create_task_group() as runs:
                    self._runs = runs
                    self._router.routes.clear()
                    for sub in self._subscriptions.values():
                        await runs.start(self._start_run(sub).run)
                    self._state = _RUNNING
                    task_status.started()
                    await self._run_plugins_until_stop()
                    if self._drain_on_stop:
                        await self._drain_before_stop()
                    self._state = BusState.STOPPING
                    for sub in self._subscriptions.values():
                        if sub.run is not None:
                            sub.run.close()
        finally:
            self._runs = None
            self._state = BusState.STOPPED
            self._stopped.set()

    async def _run_plugins_until_stop(self) -> None:
        """Each plugin's `run` as a task, until a stop is requested: then they
        are cancelled, before the bus drains."""
        async with anyio.create_task_group() as plugins:
            for plugin in self.plugins:
                plugins.start_soon(self._run_plugin, plugin)
            await self._stop_requested.wait()
            plugins.cancel_scope.cancel()

    async def _run_plugin(self, plugin: Plugin) -> None:
        try:
            await plugin.run(self)
        except Exception as exc:
            logger.error("plugin failed while running; the bus goes on", plugin=plugin.name, error=repr(exc))

    async def _drain_before_stop(self) -> None:
        self._state = _DRAINING
        try:
            await self.drain(self.shutdown_timeout)
        except TimeoutError:
            logger.warning(
                "shutdown timeout reached, cancelling unfinished deliveries",
                timeout=self.shutdown_timeout,
                pending={name: s.stats().pending for name, s in self._subscriptions.items()},
            )

    def _start_run(self, subscription: Subscription) -> DeliveryRun:
        terms = LeaseTerms(self._lease_holder, self.lease_ttl)
        return subscription.start_run(self.store, self.middleware, self._head_now, self._stop_now, terms)

    def _current_head(self) -> int:
        return self._head

    def _current_store(self) -> Store:
        return self.store

    def _history_needed(self) -> int | None:
        """What the store's compaction must keep: the lowest seq a running subscription may still read."""
        runs = (sub.run for sub in self._subscriptions.values() if sub.run is not None)
        return min((seq for seq in (run.needed_from() for run in runs) if seq is not None), default=None)

    async def _stop_plugin(self, plugin: Plugin) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await plugin.stop(self)
            except Exception as exc:
                logger.error("plugin failed to stop", plugin=plugin.name, error=repr(exc))

    # -- subscribing -----------------------------------------------------------------

    @property
    def subscriptions(self) -> Mapping[str, Subscription]:
        """The subscriptions by name (read-only)."""
        return MappingProxyType(self._subscriptions)

    @overload
    def subscribe(
        self,
        event_type: type[Event] | types.UnionType | tuple[type[Event], ...] | None = ...,
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
        event_type: type[Event] | types.UnionType | tuple[type[Event], ...] | None,
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
            name: unique on the bus; defaults to the handler's qualified name.
            **options: see `SubscriptionOptions` (``where``, ``retry``,
                ``timeout``, ``max_pending``, ``backpressure``, ``concurrency``,
                ``key``, ``from_seq``, ``durable``, ``in_thread``, ``middleware``).
        """
        if handler is not None:
            return self._add_subscription(target, handler, name, options)
        if target is not None and callable(target) and not _is_type_spec(target):
            self._add_subscription(None, target, name, options)
            return target

        def decorator(func: F) -> F:
            self._add_subscription(target, func, name, options)
            return func

        return decorator

    def _add_subscription(
        self, spec: Any, handler: Callable[..., Any], name: str | None, options: SubscribeOptions
    ) -> Subscription:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        classes = event_types(spec, handler)
        if options.get("durable") and name is None:
            raise ValueError(
                f"durable=True needs name=: the checkpoint of {handler_name(handler)!r} is saved under "
                "that name, which must stay the same across restarts"
            )
        sub_name = name if name is not None else handler_name(handler)
        if sub_name in self._subscriptions:
            raise DuplicateSubscription(
                f"a subscription named {sub_name!r} already exists on this bus; pass name= to tell them apart"
            )
        subscription = Subscription(
            classes,
            handler,
            SubscriptionOptions(name=sub_name, **options),
            self._unsubscribe_now,
        )
        self._subscriptions[sub_name] = subscription
        if self._runs is not None and self._state is not BusState.STOPPING:
            self._runs.start_soon(self._start_run(subscription).run)
        self._router.add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.name) is subscription:
            del self._subscriptions[subscription.name]
        self._router.remove(subscription)

    def _pipeline_of(self, name: str) -> Pipeline | None:
        sub = self._subscriptions.get(name)
        if sub is None or sub.run is None or not self.running:
            return None
        return sub.run.pipeline

    # -- publishing ------------------------------------------------------------------

    async def publish(self, event: Event, headers: Mapping[str, str] | None = None) -> int:
        """Store ``event``, route it to its subscriptions, and return its seq.

        Returns once the event is stored (committed, for durable stores); it
        does not wait for handlers. Raises `TypeError` for anything that is
        not an `Event`, `BusClosed` when the bus is not running (or closes
        while the publish waits for room), `BackpressureError` when a full
        ``"block"`` subscription stays full past ``publish_timeout``, and
        `CausationLoopError` when called from a handler at the bottom of a
        too-deep causation chain. A publish that raises stored nothing.
        """
        if self._state is not _RUNNING and self._state is not _DRAINING:
            raise BusClosed(f"cannot publish {type(event).__qualname__}: the bus is {self._state.value}")
        try:
            route = self._routes[type(event)]  # a subscript, which CPython specializes; .get() is a call
        except KeyError:
            route = self._router.route(type(event))
        parent = _current_record()
        record = None if parent is None and headers is None else self._new_record(event, route, headers, parent)
        if self._crowded:  # some inbox may be full: look at this route's
            await self._wait_if_full(route.blocking, parent)
        if record is None:
            event_id = self._next_id
            self._next_id = event_id + 1
            append_entry = self._commit.entry_now
            if append_entry is not None and route.entries:
                # no subscription needs a Record: the store keeps an entry (see eventbus._entry)
                entry = append_entry(event, route.name, route.version, event_id, time_ns())
                seq = self._head = entry[0]
                self._published += 1
                if self._log_publishes:
                    self._log_published(seq, seq, route.name)
                offer(route.targets, entry)
                return seq
            record = Record(0, event, route.name, route.version, event_id, time_ns())
        append_now = self._commit.now
        if append_now is None:
            await self._commit_reserving((record,), dict.fromkeys(route.blocking, 1))
            return record.seq
        # The store takes it at once and nothing runs in between: what
        # `_accepted` does for a batch, inline, one call less per publish.
        append_now((record,))
        seq = self._head = record.seq
        self._published += 1
        if self._log_publishes:
            self._log_published(seq, seq, route.name)
        offer(route.targets, record)
        return seq

    async def _wait_if_full(self, blocking: Sequence[Inbox], parent: Item | None) -> None:
        """Wait for room if one of ``blocking`` is full: the check every kind of
        publish makes before appending (a function of its own, as its loop in
        `publish` would widen every publish's frame)."""
        if any(inbox.full() for inbox in blocking):
            await self._wait_for_room(blocking, parent)

    async def ingest(
        self,
        event: Event,
        *,
        event_id: UUID,
        origin: str,
        correlation_id: UUID | None = None,
        causation_id: UUID | None = None,
        headers: Mapping[str, str] | None = None,
        depth: int = 0,
    ) -> int:
        """Append an event that originated elsewhere (another process, a broker)
        and route it like a local one; returns its local seq.

        For bridges and other plugins. The event gets a new local seq but keeps
        its ``event_id``, ``correlation_id`` (its own id when None),
        ``causation_id``, ``headers`` and causation ``depth``, plus an
        ``origin`` header (`ORIGIN_HEADER`) saying where it came from. It is
        idempotent on ``event_id`` within a window: an id among the last
        `INGEST_WINDOW` ingested in this run is not appended again, and its
        first local seq is returned. Raises what `publish` raises, and
        `CausationLoopError` when ``depth`` exceeds ``max_causation_depth``.
        """
        state = self._state
        if state is not _RUNNING and state is not _DRAINING:
            raise BusClosed(f"cannot ingest {type(event).__qualname__}: the bus is {state.value}")
        for name, value in (("event_id", event_id), ("correlation_id", correlation_id), ("causation_id", causation_id)):
            if value is not None and not isinstance(value, UUID):
                raise TypeError(f"ingest({name}=...) takes a UUID, got {value!r}")
        if not isinstance(origin, str) or not origin:
            raise ValueError(f"ingest(origin=...) must name where the event came from, got {origin!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"ingest(depth=...) must be an int >= 0, got {depth!r}")
        seen = self._ingested.get(event_id)
        if seen is not None:
            return seen
        route = self._router.routes.get(type(event)) or self._router.route(type(event))
        if depth > self.max_causation_depth:
            raise CausationLoopError(
                f"ingesting {route.name!r} (event id {event_id}) from {origin!r}: its causation chain is {depth} "
                f"events deep (max_causation_depth={self.max_causation_depth})"
            )
        stamped = _checked_headers({**(headers or {}), ORIGIN_HEADER: origin})
        record = Record(
            0, event, route.name, route.version, event_id, time_ns(), correlation_id, causation_id, stamped, depth
        )
        await self._wait_if_full(route.blocking, None)
        await self._commit_reserving((record,), dict.fromkeys(route.blocking, 1))
        self._ingested[event_id] = record.seq
        if len(self._ingested) > INGEST_WINDOW:
            del self._ingested[next(iter(self._ingested))]
        return record.seq

    async def publish_many(self, events: Iterable[Event], headers: Mapping[str, str] | None = None) -> list[int]:
        """Store a batch in one atomic append, route it, and return the seqs in order."""
        state = self._state
        if state is not _RUNNING and state is not _DRAINING:
            raise BusClosed(f"cannot publish: the bus is {state.value}")
        batch = list(events)
        parent = _current_record()
        router = self._router
        records: list[Record] = []
        blocking: dict[Inbox, int] = {}
        for index, event in enumerate(batch):
            try:
                route = router.routes.get(type(event)) or router.route(type(event))
            except TypeError as exc:
                raise TypeError(f"events[{index}]: {exc}") from None
            records.append(self._new_record(event, route, headers, parent))
            for inbox in route.blocking:
                blocking[inbox] = blocking.get(inbox, 0) + 1
        if not records:
            return []
        await self._wait_if_full(tuple(blocking), parent)
        await self._commit_reserving(records, blocking)
        return [record.seq for record in records]

    async def _commit_reserving(self, records: Sequence[Record], reserved: Mapping[Inbox, int]) -> None:
        """Run the publish chain holding room in each ``"block"`` inbox for the
        records going there, until they are routed or refused."""
        for inbox, count in reserved.items():
            inbox.reserve(count)
        try:
            await self._publish_chain(records)
        finally:
            for inbox, count in reserved.items():
                inbox.release(count)

    def _new_record(self, event: Event, route: Route, headers: Mapping[str, str] | None, parent: Item | None) -> Record:
        headers = NO_HEADERS if headers is None else _checked_headers(headers)
        event_id = self._next_id
        self._next_id = event_id + 1
        if parent is None:
            return Record(0, event, route.name, route.version, event_id, time_ns(), None, None, headers)
        parent_id, correlation, parent_depth = causation_of(parent)
        depth = parent_depth + 1
        if depth > self.max_causation_depth:
            raise CausationLoopError(
                f"publishing {route.name!r} from the handler of seq {seq_of(parent)} ({type_of(parent)}) would make "
                f"a causation chain {depth} events deep (max_causation_depth={self.max_causation_depth}); "
                "handlers are probably feeding each other in a loop"
            )
        return Record(0, event, route.name, route.version, event_id, time_ns(), correlation, parent_id, headers, depth)

    async def _wait_for_room(self, inboxes: Sequence[Inbox], parent: Item | None) -> None:
        # a handler publishing into its own full inbox cannot wait for room only it can make
        others = [inbox for inbox in inboxes if parent is None or not inbox.owns(parent)]
        try:
            with anyio.fail_after(self.publish_timeout):
                for inbox in others:
                    await inbox.wait_for_room()
        except TimeoutError:
            full = [inbox.name for inbox in others if inbox.full()]
            raise BackpressureError(
                f"subscription(s) {full} stayed full for publish_timeout={self.publish_timeout}s; "
                "the event was not stored"
            ) from None
        if not self.running:
            raise BusClosed("the bus closed while publish waited for room; the event was not stored")

    def _accepted(self, records: Sequence[Record]) -> None:
        """Records are stored: move the head and route them to their subscriptions."""
        self._head = records[-1].seq
        self._published += len(records)
        if self._log_publishes:
            self._log_published(records[0].seq, records[-1].seq, records[0].type)
        routes = self._router.routes
        for record in records:
            cls = type(record.decoded)
            route = routes.get(cls) or self._router.route(cls)
            offer(route.targets, record)

    def _log_published(self, first_seq: int, last_seq: int, type_name: str) -> None:
        """Log an append of consecutive seqs (``type_name``: the first one's type)."""
        count = last_seq - first_seq + 1
        logger.debug("published", seq=first_seq, type=type_name, count=count, last_seq=last_seq)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every subscription has finished (handled, dropped or
        dead-lettered) everything published so far, including what handlers
        publish meanwhile, or has closed. Raises `TimeoutError` after
        ``timeout`` seconds, and `RuntimeError` when called from inside a
        handler (it would wait for itself)."""
        if _current_record() is not None:
            raise RuntimeError(
                "drain() was called from inside a handler: it would wait for that handler to finish; "
                "drain from outside the handlers"
            )
        with anyio.fail_after(timeout):
            while True:
                if self._commit.busy:
                    await self._commit.wait_idle()
                    continue
                busy = [run for sub in self._subscriptions.values() if (run := sub.run) and not run.is_idle()]
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
        names: set[str] | None = None
        if event_types:
            names = set()
            for spec in event_types:
                if isinstance(spec, str):
                    names.add(spec)
                elif isinstance(spec, type) and issubclass(spec, Event):
                    found = registry.names_for((spec,))
                    if found is None:
                        names = None
                        break
                    names.update(found)
                else:
                    raise TypeError(f"replay() takes Event classes or type names, got {spec!r}")
        return Replay(self.store, from_seq=from_seq, to_seq=to_seq, types=names)

    # -- observability -------------------------------------------------------------

    def stats(self) -> BusStats:
        """A snapshot of the bus's and every subscription's counters."""
        return BusStats(
            published=self._published,
            head=self._head,
            first_seq=self.store.first_seq,
            subscriptions=MappingProxyType({name: sub.stats() for name, sub in self._subscriptions.items()}),
        )


def _freed_bus_unsubscribe(subscription: Subscription) -> None:
    """Closing a subscription whose bus was freed: nothing routes to it any more."""


async def _shielded(close: Callable[[], Any]) -> None:
    with anyio.CancelScope(shield=True):
        await close()


def _is_type_spec(target: Any) -> bool:
    return isinstance(target, (type, tuple, types.UnionType)) or hasattr(target, "__origin__")


def _checked_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of str to str, got {type(headers).__name__}")
    copied = dict(headers)
    for name, value in copied.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"headers must map str to str, got {name!r}: {value!r}")
    return MappingProxyType(copied)
