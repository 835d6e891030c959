"""The bad-input catalog: unusual yet ordinary inputs, each refused with a typed
exception that names what was wrong, and the store intact afterwards (re-read
and compared with what it held before).

One test per input, grouped by the numbered items of issue 11 and then the
inputs that already behaved. Where an input concerns stores, it runs on the
memory store and on a real SQLite file (PostgreSQL where the input is its own).
"""

from __future__ import annotations

import functools
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio
import pydantic
import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field

from eventbus import (
    BusClosed,
    Event,
    EventBus,
    EventDecodeError,
    MemoryStore,
    Retry,
    Store,
    StoreError,
)
from eventbus.event import registry
from eventbus.store import store_from_url
from eventbus.store.url import redact_url
from tests.postgres_server import POSTGRES_URL, admin_sql, with_password

WAIT = 20.0
SECRET = "s3cr@t:pa"
"""A password holding an unencoded ``@`` and ``:``."""


class Payment(Event, name="bad_input.payment"):
    payment_id: str
    amount: float


class Aliased(Event, name="bad_input.aliased"):
    order_id: str = Field(alias="orderId")


class AliasedByName(Event, name="bad_input.aliased_by_name"):
    model_config = ConfigDict(validate_by_name=True)

    order_id: str = Field(alias="orderId")


class WithTotal(Event, name="bad_input.with_total"):
    net: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def gross(self) -> int:
        return self.net * 2


class Money(BaseModel):
    value: float


class Priced(Event, name="bad_input.priced"):
    price: Money


class Hidden(Event, name="bad_input.hidden"):
    shown: int
    secret: int = Field(default=0, exclude=True)


class Tagged(Event, name="bad_input.tagged"):
    extra: Any = None


# -- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Everything a store holds, for comparing before and after a bad input."""

    head: int
    records: list[tuple[Any, ...]]
    letters: list[tuple[Any, ...]]
    checkpoints: dict[str, int]


async def snapshot(store: Store) -> Snapshot:
    records = [
        (r.seq, r.type, r.version, r.event_id, r.data if isinstance(r.data, str) else r.data.decode(), r.depth)
        for r in await store.read(limit=10_000)
    ]
    letters = [
        (letter.id, letter.subscription, letter.error_message, letter.record.seq)
        for letter in await store.dead_letters()
    ]
    return Snapshot(await store.head(), records, letters, dict(await store.checkpoints()))


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_store(store_kind: str, tmp_path: Path) -> Callable[[], Store]:
    """Makes stores on one set of data: one memory store, or one SQLite file."""
    memory = MemoryStore()
    if store_kind == "memory":
        return lambda: memory
    return lambda: store_from_url(f"sqlite:///{tmp_path / 'events.db'}")


@pytest.fixture
async def bus(new_store: Callable[[], Store]) -> AsyncIterator[EventBus]:
    """A running bus with a little history: two payments and a checkpoint."""
    async with EventBus(new_store()) as bus:
        await bus.publish(Payment(payment_id="P1", amount=10))
        await bus.publish(Payment(payment_id="P2", amount=20))
        await bus.store.save_checkpoints({"ledger": 2})
        yield bus


async def refused(
    bus: EventBus, exception: type[BaseException], match: str, action: Callable[[], Awaitable[Any]]
) -> BaseException:
    """Run ``action``, expect ``exception`` matching ``match``, and check the store did not change."""
    before = await snapshot(bus.store)
    with pytest.raises(exception, match=match) as caught:
        await action()
    assert await snapshot(bus.store) == before, "a refused input changed the store"
    return caught.value


def eventbus_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus.cli", *args], capture_output=True, text=True, timeout=WAIT, check=False
    )


# -- 1. events that would not read back -------------------------------------------------------


def test_1_a_nan_or_infinite_float_is_refused_when_the_event_is_built() -> None:
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(pydantic.ValidationError, match="amount") as caught:
            Payment(payment_id="P", amount=value)
        assert isinstance(caught.value, ValueError)


async def test_1_a_nan_that_bypassed_validation_is_never_stored(bus: EventBus, store_kind: str) -> None:
    sneaky = Payment.model_construct(payment_id="P3", amount=math.nan)
    if store_kind == "memory":
        # the memory store keeps the object itself: nothing is encoded, so nothing is lost
        assert await bus.publish(sneaky) == 3
        return
    error = await refused(bus, StoreError, "amount", lambda: bus.publish(sneaky))
    assert "Payment.amount (nan) is not a finite number" in str(error)


async def test_1_a_nan_inside_an_any_field_is_never_stored(bus: EventBus, store_kind: str) -> None:
    event = Tagged(extra={"ratios": [1.0, math.inf]})
    if store_kind == "memory":
        assert await bus.publish(event) == 3
        return
    await refused(bus, StoreError, r"Tagged\.extra\['ratios'\]\[1\] \(inf\)", lambda: bus.publish(event))


async def test_1_a_nan_waiting_for_an_append_in_flight_fails_its_own_publish_alone(tmp_path: Path) -> None:
    """A persistent store's publishers make their JSON while another append is
    in flight; an event that does not encode is still refused by the store's
    own append, with `StoreError`, and the publishes beside it are stored."""
    path = tmp_path / "events.db"
    outcomes: dict[str, object] = {}
    async with EventBus(store_from_url(f"sqlite:///{path}")) as bus:

        async def publisher(name: str, event: Event) -> None:
            try:
                outcomes[name] = await bus.publish(event)
            except StoreError as exc:
                outcomes[name] = exc

        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # the file's write lock: the first append waits for it
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(publisher, "first", Payment(payment_id="F", amount=1))
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(publisher, "sneaky", Payment.model_construct(payment_id="S", amount=math.nan))
                    tg.start_soon(publisher, "beside", Payment(payment_id="B", amount=2))
                    await anyio.wait_all_tasks_blocked()  # both wait for the first append
                    other.execute("ROLLBACK")
        stored = [(record.seq, record.event) for record in await bus.store.read()]
    assert isinstance(outcomes["sneaky"], StoreError)
    assert "Payment.amount (nan) is not a finite number" in str(outcomes["sneaky"])
    assert stored == [
        (outcomes["first"], Payment(payment_id="F", amount=1)),
        (outcomes["beside"], Payment(payment_id="B", amount=2)),
    ]


async def test_1_a_field_populated_by_alias_is_refused_at_publish_naming_it(bus: EventBus) -> None:
    event = Aliased(orderId="A1")
    await refused(bus, ValueError, r"Aliased\.order_id is written as 'order_id'", lambda: bus.publish(event))
    await refused(bus, ValueError, "Aliased.order_id", lambda: bus.publish_many([event]))


async def test_1_an_alias_that_also_reads_by_name_round_trips(bus: EventBus) -> None:
    seq = await bus.publish(AliasedByName(orderId="A1"))
    [record] = await bus.store.read(seq)
    assert registry.decode(record.type, record.version, record.data) == AliasedByName(orderId="A1")


async def test_1_a_computed_field_is_refused_at_publish_naming_it(bus: EventBus) -> None:
    await refused(bus, ValueError, r"WithTotal\.gross is a computed field", lambda: bus.publish(WithTotal(net=2)))


async def test_1_a_nested_model_whose_floats_accept_nan_is_refused_naming_the_field(bus: EventBus) -> None:
    event = Priced(price=Money(value=1.5))
    await refused(bus, ValueError, r"Priced\.price\.value is a float that accepts NaN", lambda: bus.publish(event))


async def test_1_an_excluded_field_is_refused_naming_it(bus: EventBus) -> None:
    await refused(bus, ValueError, r"Hidden\.secret is excluded", lambda: bus.publish(Hidden(shown=1, secret=2)))


# -- 2. handlers that would never run ------------------------------------------------------------


def test_2_an_async_generator_handler_is_refused_at_subscribe() -> None:
    bus = EventBus()

    async def stream(event: Payment) -> Any:
        yield event

    with pytest.raises(TypeError, match="stream is a generator function"):
        bus.subscribe(stream)
    assert dict(bus.subscriptions) == {}


def test_2_a_generator_handler_is_refused_at_subscribe() -> None:
    bus = EventBus()

    def produce(event: Payment) -> Any:
        yield event

    with pytest.raises(TypeError, match="produce is a generator function"):
        bus.subscribe(produce)


async def test_2_a_sync_callable_returning_an_async_generator_dead_letters_naming_it(bus: EventBus) -> None:
    async def stream(event: Payment) -> Any:
        yield event

    bus.subscribe(Payment, lambda event: stream(event), name="lambda-stream")
    await bus.publish(Payment(payment_id="P3", amount=1))
    await bus.drain(WAIT)
    [letter] = await bus.dead_letters.list()
    assert letter.error_type == "builtins.TypeError"
    assert "returned a async_generator" in letter.error_message


# -- 3. dead letters holding any text ------------------------------------------------------------


async def test_3_a_failure_message_with_lone_surrogates_is_kept_as_a_dead_letter(bus: EventBus) -> None:
    name = os.fsdecode(b"/data/caf\xe9.csv")  # what a non-UTF-8 file name decodes to

    @bus.subscribe(name="files")
    def load(event: Payment) -> None:
        raise FileNotFoundError(f"cannot open {name}\x00")

    await bus.publish(Payment(payment_id="P3", amount=1))
    await bus.drain(WAIT)
    [letter] = await bus.dead_letters.list()
    assert letter.subscription == "files"
    assert "/data/caf" in letter.error_message
    assert letter.error_message.encode("utf-8", "backslashreplace")
    assert await bus.dead_letters.redrive() == 0
    assert len(await bus.dead_letters.list()) == 1


# -- 4. rows that cannot be decoded ----------------------------------------------------------------


async def test_4_a_corrupted_row_fails_alone_naming_its_seq(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with EventBus(f"sqlite:///{path}") as bus:
        for number in range(3):
            await bus.publish(Payment(payment_id=f"P{number}", amount=number), headers={"h": "v"})
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("UPDATE eventbus_records SET headers = '{oops' WHERE seq = 2")
        connection.commit()
    async with EventBus(f"sqlite:///{path}") as bus:
        replay = bus.replay()
        first = await replay.__anext__()
        with pytest.raises(EventDecodeError, match="seq 2 cannot be read: headers are not JSON") as caught:
            await replay.__anext__()
        rest = [record async for record in replay]
    assert caught.value.seq == 2
    assert [first.seq, *(record.seq for record in rest)] == [1, 3]


# -- 6. retries ------------------------------------------------------------------------------------


# -- 5. a publish cancelled while its group commit is pending --------------------------------


async def test_5_a_publish_that_raises_stored_nothing_and_one_that_returned_is_stored(
    new_store: Callable[[], Store],
) -> None:
    returned: dict[int, int] = {}
    cancelled: list[int] = []
    async with EventBus(new_store()) as bus:

        async def publisher(n: int) -> None:
            try:
                returned[n] = await bus.publish(Payment(payment_id=f"C{n}", amount=n))
            except anyio.get_cancelled_exc_class():
                cancelled.append(n)
                raise

        with anyio.fail_after(WAIT), anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                for n in range(200):
                    tg.start_soon(publisher, n)
                # every publisher is now waiting in the group commit (or has returned)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        stored = {
            record.event.payment_id: record.seq
            for record in await bus.store.read(1, limit=10_000)
            if isinstance(record.event, Payment) and record.event.payment_id.startswith("C")
        }
    assert stored == {f"C{n}": seq for n, seq in returned.items()}, "stored exactly what publish acknowledged"
    assert len(returned) + len(cancelled) <= 200


# -- 7. "block" with many concurrent publishers ------------------------------------------------


async def test_7_block_holds_its_bound_under_200_concurrent_publishers(new_store: Callable[[], Store]) -> None:
    max_pending = 10
    peak = 0
    release = anyio.Event()
    async with EventBus(new_store()) as bus:

        @bus.subscribe(name="slow", max_pending=max_pending)
        async def slow(event: Payment) -> None:
            nonlocal peak
            peak = max(peak, bus.stats()["slow"].pending - 1)
            await release.wait()

        async def publisher(n: int) -> None:
            await bus.publish(Payment(payment_id=f"B{n}", amount=n))
            nonlocal peak
            peak = max(peak, bus.stats()["slow"].pending - 1)

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for n in range(200):
                    tg.start_soon(publisher, n)
                await anyio.wait_all_tasks_blocked()
                assert bus.stats()["slow"].pending - 1 <= max_pending
                release.set()
            await bus.drain()
        stats = bus.stats()["slow"]
    assert peak <= max_pending, f"the queue held {peak} events past max_pending={max_pending}"
    assert stats.delivered == 200
    assert stats.overflowed == 0


def test_6_a_huge_number_of_attempts_never_overflows_the_backoff() -> None:
    policy = Retry(attempts=100_000, backoff=0.5, max_backoff=7.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 1_100, 99_999)] == [0.5, 1.0, 7.0, 7.0]
    assert Retry(attempts=5_000, backoff=0.0, jitter=0.0).delay(4_999) == 0.0


async def test_6_a_handler_retried_past_1024_attempts_dead_letters_with_its_own_error(bus: EventBus) -> None:
    attempts = 1_100

    @bus.subscribe(name="stubborn", retry=Retry(attempts=attempts, backoff=0.0, jitter=0.0))
    async def stubborn(event: Payment) -> None:
        raise LookupError(event.payment_id)

    await bus.publish(Payment(payment_id="P3", amount=1))
    await bus.drain(WAIT)
    [letter] = await bus.dead_letters.list()
    assert (letter.error_type, letter.error_message, letter.attempts) == ("builtins.LookupError", "P3", attempts)


# -- 8. passwords ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{SECRET}@db.example:5432/events",
        "postgresql://app:pa/ss@db.example:5432/events",
        "postgresql://app@db.example/events?password=hunter2&schema=billing",
        "postgresql://app:pw%40x@db.example/events?sslpassword=zz",
        "postgresql://app:pa?ss@db.example/events",
    ],
)
def test_8_redact_url_hides_every_form_of_password(url: str) -> None:
    shown = redact_url(url)
    for secret in (SECRET, "hunter2", "pw%40x", "zz", "pa?ss", "pa/ss"):
        assert secret not in shown
    assert "***" in shown
    assert "app" in shown


async def test_8_no_password_in_repr_or_store_errors() -> None:
    closed_port = "postgresql://app:" + SECRET + "@127.0.0.1:1/test?connect_timeout=2"
    store = store_from_url(closed_port)
    assert SECRET not in repr(store)
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert SECRET not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
    with pytest.raises(StoreError) as bad_port:
        store_from_url(f"postgresql://app:{SECRET}@127.0.0.1:99999/test")
    assert SECRET not in str(bad_port.value)


async def test_8_no_password_in_cli_output() -> None:
    schema = f"bad_input_{uuid4().hex[:12]}"
    url = f"{with_password(POSTGRES_URL, SECRET)}?schema={schema}&password=hunter2"
    try:
        async with EventBus(url) as bus:  # trust auth: any password is accepted
            await bus.publish(Payment(payment_id="P1", amount=1))
        done = await anyio.to_thread.run_sync(eventbus_cli, "stats", "--json", url)
        table = await anyio.to_thread.run_sync(eventbus_cli, "stats", url)
        failed = await anyio.to_thread.run_sync(
            eventbus_cli, "stats", with_password("postgresql://app@127.0.0.1:1/test?connect_timeout=2", SECRET)
        )
    finally:
        await anyio.to_thread.run_sync(admin_sql, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert done.returncode == 0, done.stderr
    assert '"head": 1' in done.stdout
    assert table.returncode == 0, table.stderr
    assert failed.returncode == 1
    for output in (done.stdout, done.stderr, table.stdout, table.stderr, failed.stdout, failed.stderr):
        assert SECRET not in output
        assert "hunter2" not in output
    assert "***" in done.stdout
    assert "***" in table.stdout
    assert "127.0.0.1:1" in failed.stderr


# -- 9. the base class ----------------------------------------------------------------------------------


async def test_9_publishing_the_base_event_class_is_a_type_error_naming_it(bus: EventBus) -> None:
    await refused(bus, TypeError, "eventbus.Event itself", lambda: bus.publish(Event()))
    await refused(
        bus, TypeError, "eventbus.Event itself", lambda: bus.publish_many([Payment(payment_id="x", amount=1), Event()])
    )


# -- 10. untyped or silent errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "exception", "named"),
    [
        ("postgresql://app@127.0.0.1:99999/events", StoreError, "99999"),
        ("sqlite:///%00.db", ValueError, "sqlite:///%00.db"),
        ("sqlite://host/events.db", ValueError, "'host'"),
        ("sqlite:///events.db?synchronous=off", ValueError, "synchronous"),
        ("sqlite:///events.db?busy_timeout=soon", ValueError, "busy_timeout"),
        ("sqlite://", ValueError, "in-memory"),
        ("nosuch://x", StoreError, "nosuch"),
        ("no scheme at all", ValueError, "no scheme at all"),
        ("postgresql://app@db/events?max_pool_size=0", ValueError, "max_pool_size"),
        ("postgresql://app@db/events?schema=Bad-Name", ValueError, "schema"),
    ],
)
def test_10_a_malformed_url_is_a_typed_error_naming_it(url: str, exception: type[Exception], named: str) -> None:
    with pytest.raises(exception) as caught:
        EventBus(store=url)
    assert named in str(caught.value)


async def test_10_purging_text_ids_is_a_type_error_and_deletes_nothing(bus: EventBus) -> None:
    @bus.subscribe(name="failing")
    def failing(event: Payment) -> None:
        raise RuntimeError("no")

    await bus.publish(Payment(payment_id="P3", amount=1))
    await bus.drain(WAIT)
    [letter] = await bus.dead_letters.list()
    await refused(bus, TypeError, "must be UUIDs, got str", lambda: bus.dead_letters.purge([str(letter.id)]))
    await refused(bus, TypeError, "UUID", lambda: bus.store.delete_dead_letters([letter.id.int]))  # type: ignore[list-item]
    assert isinstance(letter.id, UUID)
    assert await bus.dead_letters.purge([letter.id]) == 1


# -- 12. upcasting --------------------------------------------------------------------------------------


class Renamed(Event, name="bad_input.renamed", version=2):
    title: str


@Renamed.upcaster(from_version=1)
def _name_to_title(data: dict[str, Any]) -> dict[str, Any]:
    return {"title": data.pop("name")}


@contextmanager
def counting_type_adapters() -> Iterator[list[object]]:
    """Notes every pydantic `TypeAdapter` built inside the block."""
    built: list[object] = []
    original = pydantic.TypeAdapter.__init__

    @functools.wraps(original)
    def init(self: pydantic.TypeAdapter[Any], *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    pydantic.TypeAdapter.__init__ = init  # type: ignore[method-assign]
    try:
        yield built
    finally:
        pydantic.TypeAdapter.__init__ = original  # type: ignore[method-assign]


def test_12_upcasting_builds_no_type_adapter_per_event() -> None:
    with counting_type_adapters() as built:
        events = [registry.decode("bad_input.renamed", 1, f'{{"name": "n{n}"}}', seq=n) for n in range(200)]
    assert events[-1] == Renamed(title="n199")
    assert built == []


def test_12_old_data_that_is_not_an_object_is_a_decode_error_naming_the_seq() -> None:
    with pytest.raises(EventDecodeError, match=r"seq 7 .*not a JSON object"):
        registry.decode("bad_input.renamed", 1, "[1, 2]", seq=7)
    with pytest.raises(EventDecodeError, match="seq 8"):
        registry.decode("bad_input.renamed", 1, "{not json", seq=8)


# -- inputs that already behaved ------------------------------------------------------------------------


def _three_arguments(event: Payment, record: object, extra: object) -> None: ...


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (lambda: None, "takes no argument"),
        (_three_arguments, r"must take \(event\) or \(event, record\)"),
        (lambda event: None, "no annotation"),
    ],
)
def test_a_wrong_handler_signature_is_a_type_error(handler: Callable[..., Any], message: str) -> None:
    bus = EventBus()
    with pytest.raises(TypeError, match=message):
        bus.subscribe(handler)
    assert dict(bus.subscriptions) == {}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_pending": 0}, "max_pending"),
        ({"backpressure": "explode"}, "backpressure"),
        ({"concurrency": 0}, "concurrency"),
        ({"timeout": -1}, "timeout"),
        ({"from_seq": 0}, "from_seq"),
    ],
)
def test_a_bad_subscription_option_is_a_value_error_naming_it(options: dict[str, Any], named: str) -> None:
    bus = EventBus()

    async def handler(event: Payment) -> None: ...

    with pytest.raises(ValueError, match=named):
        bus.subscribe(Payment, handler, **options)
    assert dict(bus.subscriptions) == {}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_causation_depth": 0}, "max_causation_depth"),
        ({"publish_timeout": 0}, "publish_timeout"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
    ],
)
def test_a_bad_bus_option_is_a_value_error_naming_it(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        EventBus(**options)


async def test_a_file_that_is_not_a_database_is_a_store_error_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    content = b"my notes, not a database\n" * 100
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a database") as caught:
        async with EventBus(f"sqlite:///{path}"):
            pass
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content


async def test_a_read_only_file_is_a_store_error_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with EventBus(f"sqlite:///{path}") as bus:
        await bus.publish(Payment(payment_id="P1", amount=1))
    content = path.read_bytes()
    path.chmod(0o444)
    immutable = os.geteuid() == 0  # root ignores permissions: make the file immutable instead
    if immutable:
        await anyio.run_process(["chattr", "+i", str(path)])
    try:
        with pytest.raises(StoreError) as caught:
            async with EventBus(f"sqlite:///{path}") as bus:
                await bus.publish(Payment(payment_id="P2", amount=2))
    finally:
        if immutable:
            await anyio.run_process(["chattr", "-i", str(path)])
        path.chmod(0o644)
    assert str(path) in str(caught.value)
    assert "readonly" in str(caught.value) or "read-only" in str(caught.value)
    assert path.read_bytes() == content


async def test_publishing_on_a_closed_bus_is_bus_closed(new_store: Callable[[], Store]) -> None:
    bus = EventBus(new_store())
    with pytest.raises(BusClosed, match="Payment"):
        await bus.publish(Payment(payment_id="P1", amount=1))
    async with bus:
        await bus.publish(Payment(payment_id="P1", amount=1))
    with pytest.raises(BusClosed, match="Payment: the bus is stopped"):
        await bus.publish(Payment(payment_id="P2", amount=2))
    reopened = new_store()
    await reopened.open()
    try:
        assert [record.event for record in await reopened.read()] == [Payment(payment_id="P1", amount=1)]
    finally:
        await reopened.close()


async def test_publishing_something_that_is_not_an_event_is_a_type_error(bus: EventBus) -> None:
    await refused(bus, TypeError, "dict", lambda: bus.publish({"payment_id": "P"}))  # type: ignore[arg-type]
    await refused(bus, TypeError, r"events\[1\]", lambda: bus.publish_many([Payment(payment_id="x", amount=1), 3]))  # type: ignore[list-item]


async def test_headers_that_are_not_text_are_a_type_error(bus: EventBus) -> None:
    event = Payment(payment_id="P3", amount=1)
    await refused(bus, TypeError, "str", lambda: bus.publish(event, headers={"n": 1}))  # type: ignore[dict-item]


async def test_replay_from_seq_zero_is_a_value_error(bus: EventBus) -> None:
    with pytest.raises(ValueError, match="from_seq"):
        bus.replay(from_seq=0)
