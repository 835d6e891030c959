"""`EventBus`: publish, subscribe, replay, and the bus lifecycle."""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar, overload
from uuid import UUID

import anyio
import anyio.abc

from ._context import current_record
from ._ids import first_id
from ._log import logger
from .deadletter import DeadLetters
from .event import Event, registry
from .exceptions import BackpressureError, BusClosed, CausationLoopError, DuplicateSubscription
from .handler import event_types, handler_name
from .middleware.base import Commit, Middleware, PublishMiddleware
from .middleware.deadletter import bury
from .plugins import Plugin, load_plugin
from .policies import Backpressure, Retry
from .record import NO_HEADERS, Record
from .replay import Replay
from .routing import Route, Router
from .stats import BusStats
from .store.base import Store
from .store.url import open_store
from .subscription import DEFAULT_MAX_PENDING, Subscription, SubscriptionOptions

__all__ = ["DEFAULT_MAX_CAUSATION_DEPTH", "DEFAULT_SHUTDOWN_TIMEOUT", "EventBus"]

F = TypeVar("F", bound=Callable[..., Any])
E1 = TypeVar("E1", bound=Event)
E2 = TypeVar("E2", bound=Event)

DEFAULT_MAX_CAUSATION_DEPTH = 64
DEFAULT_SHUTDOWN_TIMEOUT = 30.0


class _PendingCommit:
    """Records waiting for the append in flight to finish (group commit)."""

    __slots__ = ("done", "error", "records")

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        self.done = anyio.Event()
        self.error: BaseException | None = None


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
    ) -> None:
        if publish_timeout is not None and not publish_timeout > 0:
            raise ValueError(f"publish_timeout must be a positive number of seconds, got {publish_timeout!r}")
        if shutdown_timeout is not None and not shutdown_timeout >= 0:
            raise ValueError(f"shutdown_timeout must be >= 0 seconds, got {shutdown_timeout!r}")
        if isinstance(max_causation_depth, bool) or not isinstance(max_causation_depth, int) or max_causation_depth < 1:
            raise ValueError(f"max_causation_depth must be an int >= 1, got {max_causation_depth!r}")
        self.store: Store = open_store(store)
        self.plugins: tuple[Plugin, ...] = tuple(load_plugin(plugin) for plugin in plugins)
        self.middleware: tuple[Middleware, ...] = (
            *middleware,
            *(mw for plugin in self.plugins for mw in plugin.middleware),
        )
        publish_chain: Commit = self._commit
        for wrap in reversed([*publish_middleware, *(mw for p in self.plugins for mw in p.publish_middleware)]):
            publish_chain = wrap(publish_chain)
        self._publish_chain = publish_chain
        self.publish_timeout = publish_timeout
        self.max_causation_depth = max_causation_depth
        self.shutdown_timeout = shutdown_timeout
        self.dead_letters = DeadLetters(self)
        self._router = Router()
        self._subscriptions: dict[str, Subscription] = {}
        self._next_id = first_id()
        self._head = 0
        self._published = 0
        self._running = False
        self._state = "new"
        self._task_group: anyio.abc.TaskGroup | None = None
        self._committing = False
        self._pending_commits: list[_PendingCommit] = []
        self._commits_idle: anyio.Event | None = None
        self._log_publishes = False

    def __repr__(self) -> str:
        return f"<EventBus {self._state} store={type(self.store).__name__} subscriptions={len(self._subscriptions)}>"

    # -- lifecycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between entering and leaving ``async with bus``."""
        return self._running

    @property
    def head(self) -> int:
        """The newest seq this bus has appended or found in its store."""
        return self._head

    async def __aenter__(self) -> EventBus:
        if self._state != "new":
            raise BusClosed(f"this bus is {self._state}; an EventBus runs once, create a new one to restart")
        self._state = "starting"
        await self.store.open()
        try:
            self._head = await self.store.head()
            for plugin in self.plugins:
                await plugin.start(self)
            self._task_group = anyio.create_task_group()
            await self._task_group.__aenter__()
        except BaseException:
            self._state = "closed"
            await self.store.close()
            raise
        self._running = True
        self._state = "running"
        # Asked once, not per publish: the check costs more than a publish.
        self._log_publishes = logger.is_enabled_for(logging.DEBUG)
        for sub in self._subscriptions.values():
            sub._attach(self._head)
            await self._task_group.start(sub._run)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the bus: drain (up to ``shutdown_timeout``), stop the workers,
        then the plugins, then close the store. Leaving ``async with`` calls it.

        Deliveries still running at the timeout are cancelled: they were never
        marked done, so a durable subscription sees them again after restart.
        """
        if self._state != "running":
            return
        self._state = "closing"
        assert self._task_group is not None
        try:
            with anyio.CancelScope(shield=True):
                try:
                    await self.drain(self.shutdown_timeout)
                except TimeoutError:
                    logger.warning(
                        "shutdown timeout reached, cancelling unfinished deliveries",
                        timeout=self.shutdown_timeout,
                        pending={name: s.stats().pending for name, s in self._subscriptions.items()},
                    )
            self._running = False
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                for plugin in reversed(self.plugins):
                    try:
                        await plugin.stop(self)
                    except Exception as exc:
                        logger.error("plugin failed to stop", plugin=plugin.name, error=repr(exc))
                self._state = "closed"
                await self.store.close()

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
        where: Callable[[Any], bool] | Mapping[str, Any] | None = ...,
        retry: Retry | None = ...,
        timeout: float | None = ...,
        max_pending: int = ...,
        backpressure: Backpressure = ...,
        concurrency: int = ...,
        key: Callable[[Any], Hashable] | None = ...,
        from_seq: int | None = ...,
        durable: bool = ...,
        in_thread: bool = ...,
        middleware: Sequence[Middleware] = ...,
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
        where: Callable[[Any], bool] | Mapping[str, Any] | None = ...,
        retry: Retry | None = ...,
        timeout: float | None = ...,
        max_pending: int = ...,
        backpressure: Backpressure = ...,
        concurrency: int = ...,
        key: Callable[[Any], Hashable] | None = ...,
        from_seq: int | None = ...,
        durable: bool = ...,
        in_thread: bool = ...,
        middleware: Sequence[Middleware] = ...,
    ) -> Subscription: ...

    def subscribe(
        self,
        target: Any = None,
        handler: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        where: Callable[[Any], bool] | Mapping[str, Any] | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        backpressure: Backpressure = "block",
        concurrency: int = 1,
        key: Callable[[Any], Hashable] | None = None,
        from_seq: int | None = None,
        durable: bool = False,
        in_thread: bool = False,
        middleware: Sequence[Middleware] = (),
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
            where: a predicate on the event, or a mapping field -> expected value.
            retry: a `Retry` policy; without one, a failure is final.
            timeout: seconds per attempt before it is cancelled and failed.
            max_pending: the queue bound (see ``backpressure``).
            backpressure: ``"block"``, ``"drop_oldest"``, ``"drop_newest"`` or ``"spill"``.
            concurrency: worker tasks; with ``key``, events of one key stay in order.
            key: a function of the event giving its ordering key.
            from_seq: deliver stored history from this seq, then continue live.
            durable: checkpoint the position in the store under ``name``
                (required then) and resume from it.
            in_thread: run a sync handler in a worker thread.
            middleware: delivery middleware of this subscription only.
        """
        options: dict[str, Any] = {
            "where": where,
            "retry": retry,
            "timeout": timeout,
            "max_pending": max_pending,
            "backpressure": backpressure,
            "concurrency": concurrency,
            "key": key,
            "from_seq": from_seq,
            "durable": durable,
            "in_thread": in_thread,
            "middleware": middleware,
        }
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
        self, spec: Any, handler: Callable[..., Any], name: str | None, options: dict[str, Any]
    ) -> Subscription:
        if self._state in ("closing", "closed"):
            raise BusClosed(f"cannot subscribe {handler_name(handler)!r}: the bus is {self._state}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        classes = event_types(spec, handler)
        if options["durable"] and name is None:
            raise ValueError(
                f"durable=True needs name=: the checkpoint of {handler_name(handler)!r} is saved under "
                "that name, which must stay the same across restarts"
            )
        sub_name = name if name is not None else handler_name(handler)
        if sub_name in self._subscriptions:
            raise DuplicateSubscription(
                f"a subscription named {sub_name!r} already exists on this bus; pass name= to tell them apart"
            )
        subscription = Subscription(self, classes, handler, SubscriptionOptions(name=sub_name, **options))
        self._subscriptions[sub_name] = subscription
        self._router.add(subscription)
        if self._running:
            assert self._task_group is not None
            subscription._attach(self._head)
            self._task_group.start_soon(subscription._run)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.name) is subscription:
            del self._subscriptions[subscription.name]
        self._router.remove(subscription)

    # -- publishing ------------------------------------------------------------------

    async def publish(self, event: Event, headers: Mapping[str, str] | None = None) -> int:
        """Store ``event``, route it to its subscriptions, and return its seq.

        Returns once the event is stored (committed, for durable stores); it
        does not wait for handlers. Raises `TypeError` for anything that is
        not an `Event`, `BusClosed` when the bus is not running,
        `BackpressureError` when a full ``"block"`` subscription stays full
        past ``publish_timeout``, and `CausationLoopError` when called from a
        handler at the bottom of a too-deep causation chain.
        """
        if not self._running:
            raise BusClosed(f"cannot publish {type(event).__qualname__}: the bus is {self._state}")
        cls = type(event)
        route = self._router.routes.get(cls) or self._router.route(cls)
        parent = current_record.get()
        if parent is None and headers is None:
            event_id = self._next_id
            self._next_id = event_id + 1
            record = Record(0, event, route.name, route.version, event_id, time.time_ns())
        else:
            record = self._new_record(event, route, headers, parent)
        for sub in route.blocking:
            if len(sub._queue) >= sub._capacity and not sub._behind:
                await self._wait_for_room(route.blocking)
                break
        await self._publish_chain((record,))
        return record.seq

    async def publish_many(self, events: Iterable[Event], headers: Mapping[str, str] | None = None) -> list[int]:
        """Store a batch in one atomic append, route it, and return the seqs in order."""
        if not self._running:
            raise BusClosed(f"cannot publish: the bus is {self._state}")
        batch = list(events)
        parent = current_record.get()
        router = self._router
        records: list[Record] = []
        blocking: dict[Subscription, None] = {}
        for index, event in enumerate(batch):
            try:
                route = router.routes.get(type(event)) or router.route(type(event))
            except TypeError as exc:
                raise TypeError(f"events[{index}]: {exc}") from None
            records.append(self._new_record(event, route, headers, parent))
            blocking.update(dict.fromkeys(route.blocking))
        if not records:
            return []
        if any(sub._full() for sub in blocking):
            await self._wait_for_room(tuple(blocking))
        await self._publish_chain(records)
        return [record.seq for record in records]

    def _new_record(
        self, event: Event, route: Route, headers: Mapping[str, str] | None, parent: Record | None
    ) -> Record:
        headers = NO_HEADERS if headers is None else _checked_headers(headers)
        event_id = self._next_id
        self._next_id = event_id + 1
        if parent is None:
            return Record(0, event, route.name, route.version, event_id, time.time_ns(), None, None, headers)
        depth = parent.depth + 1
        if depth > self.max_causation_depth:
            raise CausationLoopError(
                f"publishing {route.name!r} from the handler of seq {parent.seq} ({parent.type}) would make a "
                f"causation chain {depth} events deep (max_causation_depth={self.max_causation_depth}); "
                "handlers are probably feeding each other in a loop"
            )
        parent_id, correlation, _ = parent.ids
        return Record(
            0,
            event,
            route.name,
            route.version,
            event_id,
            time.time_ns(),
            correlation if correlation is not None else parent_id,
            parent_id,
            headers,
            depth,
        )

    async def _wait_for_room(self, subscriptions: Sequence[Subscription]) -> None:
        try:
            with anyio.fail_after(self.publish_timeout):
                for sub in subscriptions:
                    await sub._wait_for_room()
        except TimeoutError:
            full = [sub.name for sub in subscriptions if sub._full()]
            raise BackpressureError(
                f"subscription(s) {full} stayed full for publish_timeout={self.publish_timeout}s; "
                "the event was not stored"
            ) from None
        if not self._running:
            raise BusClosed("the bus closed while publish waited for room")

    async def _commit(self, records: Sequence[Record]) -> None:
        """Append ``records`` and route them, one append in flight at a time.

        Publishes that arrive while an append is in flight wait and go into
        the next append together (group commit), which also keeps routing in
        seq order, the order catch-up relies on.
        """
        if self._committing:
            pending = _PendingCommit(records)
            self._pending_commits.append(pending)
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return
        self._committing = True
        try:
            await self.store.append(records)
            self._accepted(records)
        finally:
            if self._pending_commits:
                with anyio.CancelScope(shield=True):
                    await self._flush_pending_commits()
            self._committing = False
            if self._commits_idle is not None:
                self._commits_idle.set()
                self._commits_idle = None

    async def _flush_pending_commits(self) -> None:
        while self._pending_commits:
            batch, self._pending_commits = self._pending_commits, []
            try:
                await self.store.append([record for pending in batch for record in pending.records])
                for pending in batch:
                    self._accepted(pending.records)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:
                    # one publisher's bad batch must not fail the others: try each alone
                    for pending in batch:
                        try:
                            await self.store.append(pending.records)
                            self._accepted(pending.records)
                        except Exception as single_exc:
                            pending.error = single_exc
            for pending in batch:
                pending.done.set()

    def _accepted(self, records: Sequence[Record]) -> None:
        """Records are stored: move the head and route them to their subscriptions."""
        self._head = records[-1].seq
        self._published += len(records)
        if self._log_publishes:
            first = records[0]
            logger.debug("published", seq=first.seq, type=first.type, count=len(records), last_seq=self._head)
        routes = self._router.routes
        for record in records:
            cls = type(record._event)
            route = routes.get(cls) or self._router.route(cls)
            for sub in route.targets:
                sub._offer(record)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every subscription has finished (handled, dropped or
        dead-lettered) everything published so far, including what handlers
        publish meanwhile. Raises `TimeoutError` after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            while True:
                if self._committing:
                    if self._commits_idle is None:
                        self._commits_idle = anyio.Event()
                    await self._commits_idle.wait()
                    continue
                busy = [sub for sub in self._subscriptions.values() if not sub._is_idle()]
                if not busy:
                    return
                for sub in busy:
                    await sub._wait_idle()

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
        if not self._running:
            raise BusClosed(f"cannot replay: the bus is {self._state}")
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

    async def _redrive(self, ids: Collection[UUID] | None) -> int:
        wanted = None if ids is None else set(ids)
        succeeded = 0
        for letter in await self.store.dead_letters():
            if wanted is not None and letter.id not in wanted:
                continue
            sub = self._subscriptions.get(letter.subscription)
            if sub is None:
                logger.warning("dead letter's subscription is not on this bus", subscription=letter.subscription)
                continue
            error = await sub._redeliver(letter.record)
            if error is not None:
                await bury(sub, letter.record, error, earlier=letter)
            else:
                succeeded += 1
            await self.store.delete_dead_letters([letter.id])
        return succeeded

    # -- observability -------------------------------------------------------------

    def stats(self) -> BusStats:
        """A snapshot of the bus's and every subscription's counters."""
        return BusStats(
            published=self._published,
            head=self._head,
            subscriptions=MappingProxyType({name: sub.stats() for name, sub in self._subscriptions.items()}),
        )


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
