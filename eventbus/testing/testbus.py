"""`TestBus`: run an application's own bus in a test, on a store of the test's own."""

from __future__ import annotations

import contextvars
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar
from uuid import UUID

import anyio
import anyio.lowlevel

from .._testmode import failure_observer, retry_sleep
from ..bus import EventBus
from ..deadletters import DeadLetter
from ..event import Event
from ..middleware import DeliveryContext, Handle, Middleware
from ..record import Record
from ..store import MemoryStore, Store, open_store
from ._recording import RecordingStore

__all__ = ["TestBus"]

E = TypeVar("E", bound=Event)

SHOWN_RECORDS = 50
"""How many published records a `TestBus.assert_published` failure lists
before it says how many more there were."""

DEFAULT_EXPECT_TIMEOUT = 5.0
"""Seconds `TestBus.expect` waits by default."""


async def _no_delay(seconds: float) -> None:
    """The retry step's wait between attempts under `TestBus`: none, but still a checkpoint."""
    await anyio.lowlevel.checkpoint()


class TestBus:
    """Runs ``bus``, the application's own bus, for one test, and records what happens.

    ```python
    async with TestBus(bus) as tb:
        await tb.publish(OrderPlaced(order_id="A1", amount=5))
        tb.assert_published(PaymentCaptured, order_id="A1")
    ```

    The bus keeps its subscriptions, options and middleware, but for the run
    it works on a fresh `MemoryStore` (or ``store``), whatever store it was
    configured with: the application's production store is never opened.
    ``bus.store`` is given back when the run ends.

    Retry delays are skipped (the number of attempts is kept), so a test of
    a handler with ``Retry(attempts=5, backoff=10)`` takes no time. `calls`
    shows what each subscription's handler was called with.

    Args:
        bus: the application's bus, not running.
        store: the store for this run: a `Store`, a store URL, or None for a
            new `MemoryStore`. Only what is published during the run shows
            in `published`, even if the store held records before.
        raise_errors: True (the default): the first exception a handler ends
            with (after its retries) is raised, unchanged, from `publish` or
            `drain`, or when the ``async with`` block ends if neither was
            awaited after it; the delivery still becomes a dead letter.
            False: failures are only what the bus's policies make of them;
            look at `dead_letters`.
    """

    __test__ = False  # not a test class, whatever its name tells pytest

    def __init__(self, bus: EventBus, *, store: Store | str | None = None, raise_errors: bool = True) -> None:
        if not isinstance(bus, EventBus):
            raise TypeError(f"TestBus needs an EventBus, got {type(bus).__name__}")
        self.bus = bus
        self.raise_errors = raise_errors
        self._store = RecordingStore(open_store(store) if store is not None else MemoryStore())
        self._errors: list[Exception] = []
        self._calls: defaultdict[str, list[Event]] = defaultdict(list)
        self._app_store: Store | None = None
        self._app_middleware: tuple[Middleware, ...] | None = None
        self._entered = False
        self._tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []

    def __repr__(self) -> str:
        return f"<TestBus {self.bus!r} published={len(self._store.appended)}>"

    @property
    def store(self) -> Store:
        """The store the bus runs on during this test."""
        return self._store.store

    async def __aenter__(self) -> TestBus:
        if self._entered:
            raise RuntimeError("a TestBus runs once (its store and records belong to that run); create one per run")
        self._entered = True
        bus = self.bus
        if bus.running:
            raise RuntimeError(
                "TestBus needs a bus that is not running yet: enter TestBus first, then whatever runs the bus "
                "in the application (a web app's lifespan skips a bus that is running)"
            )
        self._app_store = bus.store
        bus.store = self._store
        self._app_middleware = bus.middleware
        bus.middleware = (self._record_call, *bus.middleware)  # outermost: once per delivery
        # Set before the bus starts: its workers inherit them (buses started from other tasks do not).
        self._set(retry_sleep, _no_delay)
        if self.raise_errors:
            self._set(failure_observer, self._errors.append)
        try:
            await bus.__aenter__()
        except BaseException:
            self._restore()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.bus.__aexit__(exc_type, exc, tb)
        finally:
            self._restore()
        if exc_type is None:
            self._raise_first_error()

    def _set(self, var: contextvars.ContextVar[Any], value: Any) -> None:
        self._tokens.append((var, var.set(value)))

    def _restore(self) -> None:
        while self._tokens:
            var, token = self._tokens.pop()
            var.reset(token)
        if self._app_store is not None:
            self.bus.store = self._app_store
            self._app_store = None
        if self._app_middleware is not None:
            self.bus.middleware = self._app_middleware
            self._app_middleware = None

    def _record_call(self, call_next: Handle, context: DeliveryContext) -> Handle:
        """The run's outermost delivery middleware: notes each delivery's event under its subscription."""
        calls = self._calls[context.name]

        async def record_call(record: Record) -> None:
            calls.append(record.event)
            await call_next(record)

        return record_call

    def _raise_first_error(self) -> None:
        if self._errors:
            first = self._errors[0]
            self._errors.clear()
            raise first

    # -- acting ---------------------------------------------------------------

    async def publish(self, event: Event, headers: Mapping[str, str] | None = None) -> int:
        """Publish ``event`` on the bus, then wait until every handler, and
        everything those handlers published in turn, has finished; return its seq.

        With ``raise_errors=True``, a handler's exception is raised from here.
        """
        seq = await self.bus.publish(event, headers)
        await self.drain()
        return seq

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until everything published so far (by the test, the code under
        test or the handlers) has been handled; `EventBus.drain` plus, with
        ``raise_errors=True``, the first handler exception since the last one raised."""
        await self.bus.drain(timeout)
        self._raise_first_error()

    # -- looking --------------------------------------------------------------

    @property
    def published(self) -> list[Record]:
        """Every record published during this run, in seq order."""
        return list(self._store.appended)

    def published_events(self, event_type: type[E]) -> list[E]:
        """The events of ``event_type`` (subclasses included) published during this run, in seq order."""
        return [record.event for record in self._store.appended if isinstance(record.event, event_type)]

    @property
    def calls(self) -> Mapping[str, list[Event]]:
        """What each subscription's handler was called with during this run,
        by subscription name: the event of each delivery, in order (the
        attempts of one delivery, retries included, are one call; a
        redrive is another). A subscription never called has ``[]``.

        ```python
        assert tb.calls["ship"] == [OrderPlaced(order_id="A1", amount=5)]
        ```
        """
        names = dict.fromkeys([*self.bus.subscriptions, *self._calls])
        return MappingProxyType({name: list(self._calls.get(name, ())) for name in names})

    @property
    def dead_letters(self) -> RunDeadLetters:
        """The dead letters stored during this run and still there, oldest first.

        A list, which also answers what ``bus.dead_letters`` does
        (``await tb.dead_letters.list()``, ``.redrive()``, ``.purge()``), so
        code written against the bus works on it.
        """
        return RunDeadLetters(self._store.dead_letters_added.values(), self.bus)

    def assert_published(
        self, event_type: type[E], *, times: int | None = None, where: Callable[[E], bool] | None = None, **fields: Any
    ) -> E:
        """Return the first published ``event_type`` whose ``fields`` have these
        values (and for which ``where``, if given, is true).

        ``times`` asks for exactly that many such events (at least one);
        without it, one or more will do. Raises `AssertionError` listing what
        was published when they are not there, and `ValueError` when
        ``event_type`` has no field of one of those names.
        """
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError(f"times must be an int >= 1 (for none, use assert_not_published), got {times!r}")
        found = self._matching(event_type, where, fields)
        if found and (times is None or len(found) == times):
            return found[0][1]
        wanted = _wanted(event_type, fields, where)
        problem = f"no {wanted} was published" if not found else f"{wanted} was published {len(found)} time(s)"
        if times is not None:
            problem += f", not {times}"
        raise AssertionError(f"{problem}; {_describe(self._store.appended)}")

    def assert_not_published(
        self, event_type: type[E], *, where: Callable[[E], bool] | None = None, **fields: Any
    ) -> None:
        """Raise `AssertionError` naming their seqs if any ``event_type`` whose
        ``fields`` have these values (and for which ``where`` is true) was
        published; `ValueError` for a field ``event_type`` does not have."""
        seqs = [seq for seq, _ in self._matching(event_type, where, fields)]
        if seqs:
            raise AssertionError(f"{_wanted(event_type, fields, where)} was published, at seq(s) {seqs}")

    async def expect(
        self,
        event_type: type[E],
        *,
        where: Callable[[E], bool] | None = None,
        timeout: float = DEFAULT_EXPECT_TIMEOUT,
        **fields: Any,
    ) -> E:
        """Wait until an ``event_type`` whose ``fields`` have these values (and
        for which ``where`` is true) is published, by the test, the code under
        test or a handler, and return the first; one published already counts.

        Raises `AssertionError` listing what was published when none comes
        within ``timeout`` seconds (with ``raise_errors=True``, a handler's
        exception first, if one ended a delivery meanwhile), and `ValueError`
        for a field ``event_type`` does not have.
        """
        try:
            with anyio.fail_after(timeout):
                while True:
                    seen = len(self._store.appended)
                    found = self._matching(event_type, where, fields)
                    if found:
                        return found[0][1]
                    await self._store.wait_past(seen)
        except TimeoutError:
            self._raise_first_error()
            raise AssertionError(
                f"{_wanted(event_type, fields, where)} was not published within {timeout}s; "
                f"{_describe(self._store.appended)}"
            ) from None

    def _matching(
        self, event_type: type[E], where: Callable[[E], bool] | None, fields: Mapping[str, Any]
    ) -> list[tuple[int, E]]:
        """(seq, event) of each published ``event_type`` with these ``fields`` and true ``where``, in seq order."""
        unknown = sorted(name for name in fields if name not in event_type.model_fields)
        if unknown:
            raise ValueError(f"{event_type.__qualname__} has no field(s) {unknown}")
        found: list[tuple[int, E]] = []
        for record in self._store.appended:
            event = record.event
            if (
                isinstance(event, event_type)
                and all(getattr(event, name) == value for name, value in fields.items())
                and (where is None or where(event))
            ):
                found.append((record.seq, event))
        return found


class RunDeadLetters(list[DeadLetter]):
    """`TestBus.dead_letters`: the run's dead letters as a list, which also
    answers the calls of ``bus.dead_letters`` (`eventbus.deadletters.DeadLetters`)."""

    def __init__(self, letters: Collection[DeadLetter], bus: EventBus) -> None:
        super().__init__(letters)
        self._bus = bus

    async def list(self, subscription: str | None = None) -> Sequence[DeadLetter]:
        """``bus.dead_letters.list``: the dead letters in the run's store now."""
        return await self._bus.dead_letters.list(subscription)

    async def redrive(self, ids: Collection[UUID] | None = None) -> int:
        """``bus.dead_letters.redrive``."""
        return await self._bus.dead_letters.redrive(ids)

    async def purge(self, ids: Collection[UUID] | None = None) -> int:
        """``bus.dead_letters.purge``."""
        return await self._bus.dead_letters.purge(ids)


def _wanted(event_type: type[Event], fields: Mapping[str, Any], where: object) -> str:
    wanted = ", ".join(f"{name}={value!r}" for name, value in fields.items())
    return f"{event_type.__qualname__}({wanted}){' matching where=' if where is not None else ''}"


def _describe(records: Sequence[Record]) -> str:
    if not records:
        return "nothing was published in this run"
    lines = [f"published in this run ({len(records)}):"]
    lines.extend(f"  seq {record.seq}: {record.event!r}" for record in records[:SHOWN_RECORDS])
    if len(records) > SHOWN_RECORDS:
        lines.append(f"  ... and {len(records) - SHOWN_RECORDS} more")
    return "\n".join(lines)
