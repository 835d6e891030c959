"""Leases on durable names (``lease_ttl``): on a store shared between processes,
one bus at a time delivers a durable subscription; the others stand by and
take over, from the checkpoint, when the holder closes, is killed, or loses
its lease. Each test runs on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from pathlib import Path
from uuid import uuid4

import anyio
import lease_worker
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from lease_worker import AUDIT, Beat
from structlog.testing import capture_logs
from structlog.typing import EventDict

from eventbus import EventBus, MemoryStore, Record
from eventbus.delivery import CHECKPOINT_EVERY
from tests.child_process import read_line, running
from tests.postgres_server import POSTGRES_URL, admin_sql

_WORKER = Path(lease_worker.__file__)
_DEADLINE = 30


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new store that several processes can share."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"
        return
    schema = f"leases_{uuid4().hex[:12]}"
    yield f"{POSTGRES_URL}?schema={schema}&max_pool_size=4"
    admin_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _behind_the_buses_back(url: str, sqlite_statement: str, postgres_statement: str) -> None:
    """Run a statement on the ``audit`` lease (``?`` / ``$1``: its name), as no bus would."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection, connection:
            connection.execute(sqlite_statement, (AUDIT,))
    else:
        schema = url.partition("schema=")[2].partition("&")[0]
        admin_sql(postgres_statement.format(leases=f'"{schema}".leases'), AUDIT)


def _steal_lease(url: str) -> None:
    """Hand the ``audit`` lease to another holder for an hour, as a takeover would (the token grows)."""
    _behind_the_buses_back(
        url,
        "UPDATE eventbus_leases SET holder = 'thief', token = token + 1, expires_at = expires_at + 3600000000000 "
        "WHERE name = ?",
        "UPDATE {leases} SET holder = 'thief', token = token + 1, expires_at = now() + interval '1 hour' "
        "WHERE name = $1",
    )


def _give_back_lease(url: str) -> None:
    """Let the thief's lease run out now."""
    _behind_the_buses_back(
        url,
        "UPDATE eventbus_leases SET expires_at = 0 WHERE name = ?",
        "UPDATE {leases} SET expires_at = '-infinity' WHERE name = $1",
    )


_STANDING_BY = "standing by: another process delivers this durable subscription"


@contextmanager
def _on_log(event: str) -> Iterator[anyio.Event]:
    """An event set once eventbus logs ``event`` (its logs are captured meanwhile)."""
    logged = anyio.Event()

    def watch(logger: object, method: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("event") == event:
            logged.set()
        return event_dict

    with capture_logs(processors=[watch]):
        yield logged


def _saved_position(url: str) -> int | None:
    """The ``audit`` checkpoint in the store, read behind the buses' backs."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            row = connection.execute("SELECT position FROM eventbus_checkpoints WHERE name = ?", (AUDIT,)).fetchone()
    else:
        schema = url.partition("schema=")[2].partition("&")[0]
        rows = admin_sql(f'SELECT position FROM "{schema}".checkpoints WHERE name = $1', AUDIT)
        row = rows[0] if rows else None
    return None if row is None else int(row[0])


class _Audit:
    """A durable ``audit`` subscription's handler in this process, with a signal per handled seq."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self._changed = anyio.Event()

    def __call__(self, event: Beat, record: Record) -> None:
        self.seqs.append(record.seq)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, seq: int) -> None:
        while seq not in self.seqs:
            await self._changed.wait()


def _replica(url: str, audit: _Audit, lease_ttl: float = 3.0) -> EventBus:
    bus = EventBus(url, lease_ttl=lease_ttl)
    bus.subscribe(Beat, audit, durable=True, from_seq=1, name=AUDIT)
    return bus


async def _publish(url: str, first: int, last: int) -> None:
    """Publish beats ``first`` .. ``last`` from a bus without subscriptions (another part of the system)."""
    async with EventBus(url) as bus:
        await bus.publish_many(Beat(n=n) for n in range(first, last + 1))


async def test_only_the_holder_delivers_and_stats_say_which(shared_url: str, anyio_backend: str) -> None:
    first, second = _Audit(), _Audit()
    holder, standby = _replica(shared_url, first), _replica(shared_url, second)
    with anyio.fail_after(_DEADLINE):
        async with holder:
            await _publish(shared_url, 1, 50)
            await first.wait_for(50)
            async with standby:
                await standby.drain()  # returns once it stands by
                await _publish(shared_url, 51, 100)
                await first.wait_for(100)
                assert holder.stats()[AUDIT].holds_lease is True
                assert standby.stats()[AUDIT].holds_lease is False
                assert standby.stats()[AUDIT].delivered == 0
                assert second.seqs == []
    assert first.seqs == list(range(1, 101))


async def test_a_closed_holder_hands_over_from_its_checkpoint(shared_url: str, anyio_backend: str) -> None:
    first, second = _Audit(), _Audit()
    lease_ttl = 3.0
    holder, standby = _replica(shared_url, first, lease_ttl), _replica(shared_url, second, lease_ttl)
    with anyio.fail_after(_DEADLINE):
        async with holder, standby:
            await _publish(shared_url, 1, 30)
            await first.wait_for(30)
            await holder.aclose()  # saves its position, then releases the lease
            closed_at = anyio.current_time()
            await _publish(shared_url, 31, 40)
            await second.wait_for(40)
            took_over_in = anyio.current_time() - closed_at
            assert standby.stats()[AUDIT].holds_lease is True
    assert first.seqs == list(range(1, 31))
    assert second.seqs == list(range(31, 41)), "the stand-by resumes after the closed holder's checkpoint"
    assert took_over_in < lease_ttl, "a closed holder's lease is taken at the stand-by's next try"


async def test_a_holder_that_loses_its_lease_stops_and_takes_it_back_later(shared_url: str, anyio_backend: str) -> None:
    handled: list[int] = []
    entered, gate, done = anyio.Event(), anyio.Event(), anyio.Event()

    async def audit(event: Beat, record: Record) -> None:
        if record.seq == 11 and not gate.is_set():
            entered.set()
            await gate.wait()  # held here until the lease is lost
        handled.append(record.seq)
        if record.seq == 20:
            done.set()

    bus = EventBus(shared_url, lease_ttl=1.0)
    bus.subscribe(Beat, audit, durable=True, from_seq=1, name=AUDIT)
    with anyio.fail_after(_DEADLINE):
        async with bus:
            await _publish(shared_url, 1, 20)
            await entered.wait()
            await anyio.to_thread.run_sync(_steal_lease, shared_url)
            await bus.drain()  # returns once the refused renewal cancelled the delivery and the bus stands by
            assert bus.stats()[AUDIT].holds_lease is False
            assert 11 not in handled
            gate.set()
            await anyio.to_thread.run_sync(_give_back_lease, shared_url)
            await done.wait()
            stats = bus.stats()[AUDIT]
    assert stats.holds_lease is True
    assert handled[:10] == list(range(1, 11))
    resumed_from = handled[10]
    assert handled[10:] == list(range(resumed_from, 21)), "taken back, it resumes from its checkpoint"
    assert resumed_from <= 11
    assert stats.delivered + stats.dropped + stats.dead_lettered + stats.pending == stats.routed
    assert stats.pending == 0


async def test_a_holder_paused_past_its_deadline_starts_nothing_more_once_another_took_over(
    shared_url: str, anyio_backend: str
) -> None:
    lease_ttl = 0.4  # the holder's deadline: 0.3 s after it last asked
    handled: list[int] = []

    def audit(event: Beat, record: Record) -> None:
        handled.append(record.seq)
        if record.seq == 5:
            # the event loop stops here, as in a paused process, past the lease's
            # deadline; meanwhile another process takes the lease over
            time.sleep(lease_ttl)  # the behaviour under test: the deadline passes
            _steal_lease(shared_url)

    bus = EventBus(shared_url, lease_ttl=lease_ttl)
    bus.subscribe(Beat, audit, durable=True, from_seq=1, name=AUDIT)
    with _on_log(_STANDING_BY) as standing_by, anyio.fail_after(_DEADLINE):
        async with bus:
            await _publish(shared_url, 1, 20)  # one page: 6 .. 20 are at hand when the loop resumes
            await standing_by.wait()
            stats = bus.stats()[AUDIT]
    assert handled == [1, 2, 3, 4, 5], "no delivery starts past the deadline, before the renewal is answered"
    assert stats.holds_lease is False


async def test_a_holder_paused_past_its_deadline_goes_on_once_renewed(shared_url: str, anyio_backend: str) -> None:
    lease_ttl = 0.4
    handled: list[int] = []
    done = anyio.Event()

    def audit(event: Beat, record: Record) -> None:
        handled.append(record.seq)
        if record.seq == 5:
            time.sleep(lease_ttl)  # the behaviour under test: paused past the deadline, nobody takes over
        if record.seq == 20:
            done.set()

    bus = EventBus(shared_url, lease_ttl=lease_ttl)
    bus.subscribe(Beat, audit, durable=True, from_seq=1, name=AUDIT)
    with anyio.fail_after(_DEADLINE):
        async with bus:
            await _publish(shared_url, 1, 20)
            await done.wait()
            assert bus.stats()[AUDIT].holds_lease is True
    assert handled == list(range(1, 21)), "renewed with the same token: nothing is delivered again"


async def test_a_checkpoint_save_after_a_takeover_is_refused_and_the_holder_stands_by(
    shared_url: str, anyio_backend: str
) -> None:
    handled: list[int] = []

    def audit(event: Beat, record: Record) -> None:
        handled.append(record.seq)
        if record.seq == 10:
            # another process takes the lease over, long before this one's next
            # renewal; this one's position is saved once it is idle (1 s)
            _steal_lease(shared_url)

    bus = EventBus(shared_url, lease_ttl=60.0)
    bus.subscribe(Beat, audit, durable=True, from_seq=1, name=AUDIT)
    with _on_log(_STANDING_BY) as standing_by, anyio.fail_after(_DEADLINE):
        async with bus:
            await _publish(shared_url, 1, 10)
            await standing_by.wait()
            assert bus.stats()[AUDIT].holds_lease is False
            await _publish(shared_url, 11, 15)
            await bus.drain()
    assert handled == list(range(1, 11)), "standing by, it delivers nothing more"
    assert _saved_position(shared_url) == 0, "the fenced save of 10 was refused: the position saved before stays"


class _Child:
    """A replica process, and what it has printed so far (read by `follow`)."""

    def __init__(self, process: Process, out: BufferedByteReceiveStream) -> None:
        self.process = process
        self.handled: list[int] = []
        self.logged: list[str] = []
        self.ready = anyio.Event()
        self._out = out
        self._changed = anyio.Event()

    async def follow(self) -> None:
        """Read every line until the process's output ends (a full pipe would stall it)."""
        while True:
            try:
                line = await read_line(self._out)
            except (anyio.IncompleteRead, anyio.EndOfStream):
                return
            if line == "ready":
                self.ready.set()
                continue
            kind, _, rest = line.partition(" ")
            if kind == "log":
                self.logged.append(rest)
            else:
                self.handled.append(int(rest))
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_for(self, seq: int) -> None:
        while seq not in self.handled:
            await self._changed.wait()

    async def wait_for_log(self, event: str) -> None:
        """Until the process has logged a line that begins with ``event``."""
        while not any(line.startswith(event) for line in self.logged):
            await self._changed.wait()


@asynccontextmanager
async def _replica_process(url: str, lease_ttl: float, backend: str) -> AsyncIterator[_Child]:
    async with running(_WORKER, url, str(lease_ttl), backend) as (process, out):
        child = _Child(process, out)
        async with anyio.create_task_group() as group:
            group.start_soon(child.follow)
            await child.ready.wait()
            try:
                yield child
            finally:
                if process.returncode is None:
                    process.kill()


async def test_a_standby_process_takes_over_after_the_holder_is_killed(shared_url: str, anyio_backend: str) -> None:
    lease_ttl = 4.0  # long enough that a loaded machine does not lose it by a late renewal
    with anyio.fail_after(_DEADLINE * 2):
        async with _replica_process(shared_url, lease_ttl, anyio_backend) as first:
            await _publish(shared_url, 1, 100)
            await first.wait_for(100)
            async with _replica_process(shared_url, lease_ttl, anyio_backend) as second:
                await _publish(shared_url, 101, 200)
                await first.wait_for(200)
                assert second.handled == [], f"while both live, only the holder delivers: {second.handled[:5]}..."
                first.process.send_signal(signal.SIGKILL)
                assert await first.process.wait() == -signal.SIGKILL
                killed_at = anyio.current_time()
                await _publish(shared_url, 201, 300)
                await second.wait_for(300)
                took_over_in = anyio.current_time() - killed_at
    assert first.handled == list(range(1, len(first.handled) + 1))
    resumed_from = second.handled[0]
    assert second.handled == list(range(resumed_from, 301)), "the stand-by resumes from the checkpoint, in order"
    assert resumed_from <= first.handled[-1] + 1, "nothing is missed"
    assert len(set(first.handled) & set(second.handled)) <= CHECKPOINT_EVERY
    assert took_over_in < lease_ttl + 10, f"took over {took_over_in:.1f} s after the kill"


async def test_a_holder_paused_past_its_lease_and_resumed_delivers_nothing_beside_the_new_holder(
    shared_url: str, anyio_backend: str
) -> None:
    lease_ttl = 1.0  # as in issue 21: the holder's deadline is 0.75 s after it last asked
    with anyio.fail_after(_DEADLINE * 2):
        async with (
            _replica_process(shared_url, lease_ttl, anyio_backend) as first,
            _replica_process(shared_url, lease_ttl, anyio_backend) as second,
            EventBus(shared_url) as publisher,
        ):
            await second.wait_for_log("standing by")
            await publisher.publish_many(Beat(n=n) for n in range(1, 101))
            await first.wait_for(100)
            first.process.send_signal(signal.SIGSTOP)  # before its position (100) is saved, 1 s after its last delivery
            await second.wait_for_log("took over the lease")
            await publisher.publish_many(Beat(n=n) for n in range(101, 201))
            await second.wait_for(200)
            first.process.send_signal(signal.SIGCONT)
            # resumed: its renewal and its save are due, and 101 .. 200 are new in the store
            await first.wait_for_log("standing by")
            await publisher.publish_many(Beat(n=n) for n in range(201, 251))
            await second.wait_for(250)
    late = sorted(set(first.handled) - set(range(1, 101)))
    assert late == [], f"resumed past its deadline, the old holder delivered {late}"
    assert any(line.startswith("lease lost") for line in first.logged)
    assert second.handled[-150:] == list(range(101, 251)), "after the takeover, the new holder delivers every event"


async def test_stores_that_are_not_shared_need_no_lease(tmp_path: Path, anyio_backend: str) -> None:
    audit = _Audit()
    durable_in_memory = EventBus(MemoryStore())
    durable_in_memory.subscribe(Beat, audit, durable=True, name=AUDIT)
    plain_on_sqlite = EventBus(f"sqlite:///{tmp_path / 'events.db'}")
    plain_on_sqlite.subscribe(Beat, audit, name=AUDIT)
    with anyio.fail_after(_DEADLINE):
        async with durable_in_memory, plain_on_sqlite:
            assert durable_in_memory.stats()[AUDIT].holds_lease is None
            assert plain_on_sqlite.stats()[AUDIT].holds_lease is None


@pytest.mark.parametrize("lease_ttl", [0, -1.0, float("nan"), float("inf"), True, "10"])
def test_lease_ttl_must_be_a_positive_number(lease_ttl: object) -> None:
    with pytest.raises(ValueError, match="lease_ttl"):
        EventBus(lease_ttl=lease_ttl)  # type: ignore[arg-type]
