"""`eventbus.store.immediate_append`: the fast append is declared, and checked once when the bus starts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from eventbus_sqlite import SqliteStore

from eventbus import Event, EventBus, MemoryStore, Record
from eventbus.store import StoreFeatures, immediate_append


class Ping(Event, name="tests.store_base.Ping"):
    n: int


class FastSqliteStore(SqliteStore):
    """A real SQLite store that declares the fast append it does not have."""

    features = replace(SqliteStore.features, immediate_append=True)


class NoEntries(MemoryStore):
    """A real `MemoryStore` that declares the fast append but takes ``append_entry`` away."""

    features = replace(MemoryStore.features, immediate_append=True)
    append_entry = None  # type: ignore[assignment]


class NoFastAppends(MemoryStore):
    """A real `MemoryStore` that declares the fast append but takes its methods away."""

    features = replace(MemoryStore.features, immediate_append=True)
    append_now = None  # type: ignore[assignment]
    append_new = None  # type: ignore[assignment]
    append_entry = None  # type: ignore[assignment]


class SlowSqliteStore(SqliteStore):
    """A real SQLite store with an ``append_now`` that it does not declare."""

    def append_now(self, records: Sequence[Record]) -> None:
        raise AssertionError("append_now of a store that does not declare immediate_append")


def test_a_store_that_declares_it_is_its_own_immediate_append() -> None:
    store = MemoryStore()
    assert store.features.immediate_append
    assert immediate_append(store) is store


def test_a_store_that_does_not_declare_it_has_none(tmp_path: Path) -> None:
    assert StoreFeatures().immediate_append is False
    assert immediate_append(SqliteStore(tmp_path / "events.db")) is None


def test_methods_without_the_declaration_are_not_used(tmp_path: Path) -> None:
    assert immediate_append(SlowSqliteStore(tmp_path / "events.db")) is None


@pytest.mark.parametrize(
    ("store_class", "missing"),
    [
        (NoEntries, r"append_entry\(\) of"),
        (NoFastAppends, r"append_now\(\) and append_new\(\) and append_entry\(\) of"),
        (FastSqliteStore, r"append_now\(\) and append_new\(\) and append_entry\(\) of"),
    ],
)
def test_declaring_it_without_implementing_it_is_a_type_error(
    store_class: type[MemoryStore] | type[SqliteStore], missing: str, tmp_path: Path
) -> None:
    store = store_class(tmp_path / "events.db") if issubclass(store_class, SqliteStore) else store_class()
    with pytest.raises(TypeError, match=rf"^{store_class.__qualname__} declares .*immediate_append=True.* {missing}"):
        immediate_append(store)


async def test_the_bus_refuses_such_a_store_when_it_starts(tmp_path: Path) -> None:
    bus = EventBus(store=FastSqliteStore(tmp_path / "events.db"))
    with pytest.raises(TypeError, match="FastSqliteStore declares"):
        async with bus:
            pass
    assert not bus.running


async def test_the_bus_refuses_it_with_publish_middleware_too() -> None:
    bus = EventBus(store=NoEntries(), publish_middleware=[lambda call_next: call_next])
    with pytest.raises(TypeError, match="NoEntries declares"):
        async with bus:
            pass


async def test_a_store_with_undeclared_methods_is_appended_to_through_append(tmp_path: Path) -> None:
    async with EventBus(store=SlowSqliteStore(tmp_path / "events.db")) as bus:
        assert await bus.publish(Ping(n=1)) == 1
        assert await bus.publish_many([Ping(n=2), Ping(n=3)]) == [2, 3]
        assert [record.event async for record in bus.replay(Ping)] == [Ping(n=1), Ping(n=2), Ping(n=3)]
