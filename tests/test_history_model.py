"""A model-based (hypothesis stateful) test of history: publishing, catch-up
and durable subscriptions, bus restarts on the same store, and replay.

The machine interleaves ``publish`` / ``publish_many``, ``subscribe`` (live,
``from_seq=N`` with N anywhere up to past the head, and durable named
subscriptions), closing and re-opening subscriptions, restarting the bus on the
same store (gracefully, or at once with deliveries still queued), and
``replay`` with type filters and ranges. The model is the list of stored
records; after every step the bus is drained and each subscription must have
seen exactly the stored records of its types from its start point: in seq
order, no gap, no duplicate. A durable subscription carried across restarts is
at-least-once with the bound docs/concepts/delivery-guarantees.md gives: it
resumes with no gap; after a clean stop (or ``close``) it repeats nothing, and
after a shutdown that cancelled its handler (``shutdown_timeout=0``) it repeats
only the one event that was in the handler (one worker). The looser
``CHECKPOINT_EVERY`` bound is for crashes, which skip the checkpoint written on
the way out; the crash tests cover it.

The state machine is synchronous; it drives the bus through an anyio blocking
portal (one per machine instance, on asyncio or trio), on a `MemoryStore` and
on a real SQLite file.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from replay_events import YieldingStore

from eventbus import Event, EventBus, MemoryStore, Record, Store, Subscription
from eventbus.delivery import DEFAULT_MAX_PENDING

T = TypeVar("T")

WAIT = 10.0
"""Upper bound, in seconds, on any one call into the bus; a healthy run never comes close."""

MAX_SUBSCRIPTIONS = 6
"""Subscriptions one machine creates at most, to keep every step cheap."""

MAX_BATCH = 5

MAX_PENDING = (1, 2, DEFAULT_MAX_PENDING)
"""Queue bounds: tiny ones make the live buffer overflow during catch-up."""


class ModelEvent(Event, name="model.event"):
    n: int


class Alpha(ModelEvent, name="model.alpha"):
    pass


class AlphaPrime(Alpha, name="model.alpha-prime"):
    pass


class Beta(ModelEvent, name="model.beta"):
    pass


PUBLISHED: tuple[type[ModelEvent], ...] = (Alpha, AlphaPrime, Beta)
"""The classes the machine publishes."""

SUBSCRIBED: tuple[type[ModelEvent], ...] = (ModelEvent, Alpha, Beta)
"""The classes it subscribes to: every model event, a base with a subclass, a leaf."""

TYPE_NAMES: dict[type[ModelEvent], frozenset[str]] = {
    ModelEvent: frozenset({"model.alpha", "model.alpha-prime", "model.beta"}),
    Alpha: frozenset({"model.alpha", "model.alpha-prime"}),
    AlphaPrime: frozenset({"model.alpha-prime"}),
    Beta: frozenset({"model.beta"}),
}
"""The stored type names a subscription or a replay filter on each class receives."""


@dataclass(frozen=True)
class Stored:
    """What the model knows of one stored record."""

    seq: int
    type: str
    n: int


@dataclass
class SubModel:
    """One subscription as the model sees it, across the buses it lived on.

    ``segments`` holds what the handler saw, one list per time the
    subscription was (re)subscribed; ``may_repeat[i]`` is how many records
    segment ``i`` may see again that the one before it already saw.
    """

    name: str
    target: type[ModelEvent]
    from_seq: int | None
    durable: bool
    start: int
    max_pending: int
    segments: list[list[Stored]] = field(default_factory=list)
    may_repeat: list[int] = field(default_factory=list)
    subscription: Subscription | None = None
    end: int | None = None
    """For a non-durable subscription that stopped: the head when it stopped."""
    cut_short: bool = False
    """It stopped with deliveries still queued (they are lost to it)."""

    @property
    def active(self) -> bool:
        return self.subscription is not None

    def expected(self, stored: list[Stored]) -> list[Stored]:
        names = TYPE_NAMES[self.target]
        last = self.end if self.end is not None else len(stored)
        return [record for record in stored[self.start - 1 : last] if record.type in names]


class HistoryMachine(RuleBasedStateMachine):
    """Drives one bus (and the buses restarted after it) against the model."""

    backend: ClassVar[str] = "asyncio"
    store_kind: ClassVar[str] = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._exits = contextlib.ExitStack()
        self._tmp = Path(tempfile.mkdtemp(prefix="eventbus-model-"))
        self._exits.callback(shutil.rmtree, self._tmp, ignore_errors=True)
        self.portal = self._exits.enter_context(anyio.from_thread.start_blocking_portal(self.backend))
        self._memory = YieldingStore() if self.store_kind == "yielding-memory" else MemoryStore()
        self.stored: list[Stored] = []
        self.subs: dict[str, SubModel] = {}
        self._next_n = 0
        self._bus_exit: contextlib.AbstractContextManager[Any] | None = None
        self.bus = self._start_bus()

    # -- plumbing ------------------------------------------------------------------

    def _store(self) -> Store | str:
        if self.store_kind != "sqlite":
            return self._memory
        return f"sqlite:///{self._tmp / 'events.db'}"

    def _call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await func(*args)`` on the portal's loop, bounded by `WAIT`."""

        async def bounded() -> T:
            with anyio.fail_after(WAIT):
                return await func(*args)

        return self.portal.call(bounded)

    def _start_bus(self, *, may_repeat: int = 0) -> EventBus:
        """Open a bus on the store; the durable subscriptions that were active subscribe before it starts."""
        bus = EventBus(store=self._store(), shutdown_timeout=WAIT)
        for sub in self.subs.values():
            if sub.durable and sub.active:
                self._attach(bus, sub, may_repeat=may_repeat)
        # the bus's task group must be entered and left in one task: the portal keeps one open for it
        manager = self.portal.wrap_async_context_manager(bus)
        manager.__enter__()
        self._bus_exit = manager
        return bus

    def _stop_bus(self) -> None:
        assert self._bus_exit is not None
        manager, self._bus_exit = self._bus_exit, None
        manager.__exit__(None, None, None)

    def _attach(self, bus: EventBus, sub: SubModel, *, may_repeat: int = 0) -> None:
        """Subscribe ``sub`` on ``bus`` (called on the portal's loop when the bus runs)."""
        seen: list[Stored] = []
        sub.segments.append(seen)
        sub.may_repeat.append(may_repeat)

        async def handler(event: ModelEvent, record: Record) -> None:
            seen.append(Stored(record.seq, record.type, event.n))
            # a delivery that can be cancelled after it was seen, as a real handler's I/O can
            await anyio.lowlevel.checkpoint()

        sub.subscription = bus.subscribe(
            sub.target, handler, name=sub.name, from_seq=sub.from_seq, durable=sub.durable, max_pending=sub.max_pending
        )

    def _events(self, kinds: list[type[ModelEvent]]) -> list[ModelEvent]:
        events = []
        for kind in kinds:
            events.append(kind(n=self._next_n))
            self._next_n += 1
        return events

    def _stored(self, seqs: list[int], events: list[ModelEvent]) -> None:
        head = len(self.stored)
        assert seqs == list(range(head + 1, head + 1 + len(events))), "seqs are consecutive from the head"
        self.stored.extend(Stored(seq, type(e).__event_type__, e.n) for seq, e in zip(seqs, events, strict=True))

    def _stop_subscriptions(self, *, cut_short: bool) -> None:
        """The bus stopped: non-durable subscriptions end here, durable ones wait for the next bus."""
        for sub in self.subs.values():
            if sub.active and not sub.durable:
                sub.subscription = None
                sub.end = len(self.stored)
                sub.cut_short = cut_short

    # -- rules ---------------------------------------------------------------------

    @rule(kind=st.sampled_from(PUBLISHED))
    def publish(self, kind: type[ModelEvent]) -> None:
        events = self._events([kind])
        seq = self._call(self.bus.publish, events[0])
        self._stored([seq], events)

    @rule(kinds=st.lists(st.sampled_from(PUBLISHED), max_size=MAX_BATCH))
    def publish_many(self, kinds: list[type[ModelEvent]]) -> None:
        events = self._events(kinds)
        seqs = self._call(self.bus.publish_many, events)
        self._stored(seqs, events)

    @precondition(lambda self: len(self.subs) < MAX_SUBSCRIPTIONS)
    @rule(
        data=st.data(),
        event_type=st.sampled_from(SUBSCRIBED),
        durable=st.booleans(),
        max_pending=st.sampled_from(MAX_PENDING),
        then=st.lists(st.tuples(st.sampled_from(PUBLISHED), st.integers(0, 2)), max_size=MAX_BATCH),
    )
    def subscribe(
        self,
        data: st.DataObject,
        event_type: type[ModelEvent],
        durable: bool,
        max_pending: int,
        then: list[tuple[type[ModelEvent], int]],
    ) -> None:
        """Subscribe, then publish ``then`` at once, one event at a time, letting
        the other tasks run a few times after each: these events race the
        subscription's catch-up (its first store reads, its live buffer)."""
        head = len(self.stored)
        # None (live only), or any seq from 1 to a few past the head
        from_seq = data.draw(st.none() | st.integers(1, head + 3), label="from_seq")
        start = head + 1 if from_seq is None else from_seq
        sub = SubModel(f"sub-{len(self.subs)}", event_type, from_seq, durable, start, max_pending)
        self.subs[sub.name] = sub
        events = self._events([kind for kind, _ in then])

        async def subscribe_and_publish() -> list[int]:
            self._attach(self.bus, sub)
            seqs = []
            for event, (_, pauses) in zip(events, then, strict=True):
                seqs.append(await self.bus.publish(event))
                for _ in range(pauses):
                    await anyio.lowlevel.checkpoint()
            return seqs

        self._stored(self._call(subscribe_and_publish), events)

    @precondition(lambda self: any(sub.active for sub in self.subs.values()))
    @rule(data=st.data())
    def close_subscription(self, data: st.DataObject) -> None:
        sub = data.draw(st.sampled_from([sub for sub in self.subs.values() if sub.active]), label="closed")
        assert sub.subscription is not None
        self._call(sub.subscription.aclose)
        assert sub.name not in self.bus.subscriptions
        sub.subscription = None
        if not sub.durable:
            sub.end = len(self.stored)

    @precondition(lambda self: any(sub.durable and not sub.active for sub in self.subs.values()))
    @rule(data=st.data())
    def resubscribe_durable(self, data: st.DataObject) -> None:
        dormant = [sub for sub in self.subs.values() if sub.durable and not sub.active]
        sub = data.draw(st.sampled_from(dormant), label="resubscribed")
        self.portal.call(self._attach, self.bus, sub)

    @rule()
    def restart(self) -> None:
        """Close the bus (it drains) and open a new one on the same store."""
        self._stop_bus()
        self._stop_subscriptions(cut_short=False)
        self.bus = self._start_bus()
        assert self.bus.head == len(self.stored)

    @rule(kinds=st.lists(st.sampled_from(PUBLISHED), min_size=1, max_size=MAX_BATCH))
    def publish_and_restart_at_once(self, kinds: list[type[ModelEvent]]) -> None:
        """Publish, then close without waiting for the handlers (``shutdown_timeout=0``),
        and open a new bus on the same store."""
        events = self._events(kinds)
        self._stored(self._call(self.bus.publish_many, events), events)
        self.bus.shutdown_timeout = 0
        self._stop_bus()
        self._stop_subscriptions(cut_short=True)
        # the one delivery running at the cancellation was seen but never marked done
        self.bus = self._start_bus(may_repeat=1)
        assert self.bus.head == len(self.stored)

    @rule(
        data=st.data(),
        types=st.lists(st.sampled_from([*TYPE_NAMES, *sorted(set().union(*TYPE_NAMES.values()))]), max_size=2),
    )
    def replay(self, data: st.DataObject, types: list[type[ModelEvent] | str]) -> None:
        head = len(self.stored)
        from_seq = data.draw(st.integers(1, head + 2), label="from_seq")
        to_seq = data.draw(st.none() | st.integers(0, head + 2), label="to_seq")

        async def read() -> list[Record]:
            return [record async for record in self.bus.replay(*types, from_seq=from_seq, to_seq=to_seq)]

        records = self._call(read)
        names: set[str] = set()
        for spec in types:
            names |= {spec} if isinstance(spec, str) else TYPE_NAMES[spec]
        last = head if to_seq is None else min(to_seq, head)
        expected = [r for r in self.stored[from_seq - 1 : last] if not types or r.type in names]
        assert [_stored(record) for record in records] == expected

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def every_subscription_saw_the_stored_sequence_from_its_start(self) -> None:
        self._call(self.bus.drain)
        assert self.bus.head == len(self.stored)
        for sub in self.subs.values():
            expected = sub.expected(self.stored)
            if sub.durable:
                _check_at_least_once(sub, expected)
            else:
                (seen,) = sub.segments
                if sub.cut_short:
                    assert seen == expected[: len(seen)], f"{sub.name}: not a prefix of the stored sequence"
                else:
                    assert seen == expected, f"{sub.name} (from {sub.start}): saw {_seqs(seen)}"

    def teardown(self) -> None:
        try:
            if self._bus_exit is not None:
                self._stop_bus()
        finally:
            self._exits.close()


def _stored(record: Record) -> Stored:
    event = record.event
    assert isinstance(event, ModelEvent)
    return Stored(record.seq, record.type, event.n)


def _seqs(records: list[Stored]) -> list[int]:
    return [record.seq for record in records]


def _check_at_least_once(sub: SubModel, expected: list[Stored]) -> None:
    """Each segment is a run of ``expected`` in order; it starts no later than
    right after what the earlier segments covered (no gap), and no earlier than
    ``may_repeat`` records before that (the bound on repeats)."""
    position = {record: index for index, record in enumerate(expected)}
    covered = 0
    for number, (seen, may_repeat) in enumerate(zip(sub.segments, sub.may_repeat, strict=True)):
        if not seen:
            continue
        assert seen[0] in position, f"{sub.name} segment {number}: {seen[0]} is not one of its stored records"
        first = position[seen[0]]
        assert first <= covered, f"{sub.name} segment {number}: resumed at {seen[0].seq}, skipping {expected[covered]}"
        assert covered - first <= may_repeat, (
            f"{sub.name} segment {number}: saw {covered - first} records again (at most {may_repeat})"
        )
        assert seen == expected[first : first + len(seen)], f"{sub.name} segment {number}: saw {_seqs(seen)}"
        covered = max(covered, first + len(seen))
    if sub.active:
        assert covered == len(expected), (
            f"{sub.name} (from {sub.start}): missing {_seqs(expected[covered:])} after drain"
        )


def _settings() -> settings:
    return settings(
        max_examples=25,
        stateful_step_count=25,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@pytest.mark.parametrize("store_kind", ["memory", "yielding-memory", "sqlite"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_history_matches_the_model(backend: str, store_kind: str) -> None:
    machine = type(
        f"HistoryMachine_{backend}_{store_kind}",
        (HistoryMachine,),
        {"backend": backend, "store_kind": store_kind},
    )
    run_state_machine_as_test(machine, settings=_settings())


# -- reduced cases the machine found ---------------------------------------------------------


def _store_for(kind: str, directory: Path) -> Store | str:
    return MemoryStore() if kind == "memory" else f"sqlite:///{directory / 'events.db'}"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_durable_subscription_cut_during_its_first_delivery_sees_it_after_restart(
    kind: str, tmp_path: Path
) -> None:
    # Found by the machine: without a checkpoint, the restarted subscription
    # started at the new head and the cancelled delivery was lost.
    store = _store_for(kind, tmp_path)
    started = anyio.Event()

    async def hangs(event: Alpha) -> None:
        started.set()
        await anyio.sleep_forever()

    bus = EventBus(store, shutdown_timeout=0)
    bus.subscribe(Alpha, hangs, name="mailer", durable=True)
    async with bus:
        seq = await bus.publish(Alpha(n=1))
        with anyio.fail_after(WAIT):
            await started.wait()

    seen: list[int] = []

    async def records(event: Alpha, record: Record) -> None:
        seen.append(record.seq)

    bus = EventBus(store)
    bus.subscribe(Alpha, records, name="mailer", durable=True)
    async with bus:
        await bus.drain(WAIT)
    assert seen == [seq], "the delivery cancelled at shutdown was never finished: it is seen again"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_durable_subscription_closed_before_any_delivery_resumes_where_it_started(
    kind: str, tmp_path: Path
) -> None:
    # Found by the machine: closed before it handled anything, the subscription
    # came back at the head and skipped what was published while it was closed.
    seen: list[int] = []

    async def records(event: Alpha, record: Record) -> None:
        seen.append(record.seq)

    async with EventBus(_store_for(kind, tmp_path)) as bus:
        await bus.publish(Alpha(n=0))
        sub = bus.subscribe(Alpha, records, name="ledger", durable=True)
        await bus.drain(WAIT)
        await sub.aclose()
        missed = await bus.publish(Alpha(n=1))
        bus.subscribe(Alpha, records, name="ledger", durable=True)
        await bus.drain(WAIT)
    assert seen == [missed]
