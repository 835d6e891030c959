"""`Event`: frozen models, stable type names and versions, the registry, the
upcaster registration API, and the JSON encoding stores keep."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pydantic
import pytest
from core_events import Dog, Order, Ping

import eventbus
from eventbus import DuplicateEventType, Event, EventDecodeError, EventRegistry, UnknownEventType
from eventbus.event import encode, registry


class DefaultNamed(Event):
    value: int


class EventVersionTwo(Event, name="core.event.versioned", version=2):
    value: int


def test_an_event_is_frozen() -> None:
    event = Order(order_id="A1", amount=120)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        event.amount = 1
    assert event.amount == 120


def test_an_event_rejects_unknown_fields() -> None:
    with pytest.raises(pydantic.ValidationError, match="amuont"):
        Order(order_id="A1", amuont=1)


def test_an_event_validates_its_fields() -> None:
    with pytest.raises(pydantic.ValidationError, match="amount"):
        Order(order_id="A1", amount="a lot")


def test_equal_events_are_equal_and_hashable() -> None:
    assert Ping(n=1) == Ping(n=1)
    assert Ping(n=1) != Ping(n=2)
    assert len({Ping(n=1), Ping(n=1), Ping(n=2)}) == 2


def test_name_and_version_class_keywords_set_the_type() -> None:
    assert Order.__event_type__ == "core.order"
    assert Order.__event_version__ == 1
    assert EventVersionTwo.__event_type__ == "core.event.versioned"
    assert EventVersionTwo.__event_version__ == 2


def test_the_default_name_is_module_and_qualified_name_at_version_one() -> None:
    assert DefaultNamed.__event_type__ == f"{DefaultNamed.__module__}.DefaultNamed"
    assert DefaultNamed.__event_version__ == 1

    class Nested(Event):
        pass

    assert Nested.__event_type__ == f"{__name__}.{Nested.__qualname__}"
    assert Nested.__qualname__.endswith(".<locals>.Nested")


def test_a_subclass_gets_its_own_name_not_its_parents() -> None:
    assert Dog.__event_type__ == "core.dog"

    class Unnamed(Dog):
        pass

    assert Unnamed.__event_type__.endswith(".<locals>.Unnamed")


def test_every_event_class_registers_itself() -> None:
    assert registry.current("core.order") is Order
    assert registry.current(DefaultNamed.__event_type__) is DefaultNamed
    assert isinstance(registry, EventRegistry)


def test_an_unknown_type_name_raises_unknown_event_type_naming_it() -> None:
    with pytest.raises(UnknownEventType, match=r"core\.event\.never-defined") as caught:
        registry.current("core.event.never-defined")
    assert caught.value.type == "core.event.never-defined"


def test_two_different_classes_under_one_name_and_version_are_refused() -> None:
    class First(Event, name="core.event.claimed"):
        pass

    with pytest.raises(DuplicateEventType, match=r"'core\.event\.claimed' version 1") as caught:

        class Second(Event, name="core.event.claimed"):
            pass

    assert "First" in str(caught.value)
    assert "Second" in str(caught.value)
    assert registry.current("core.event.claimed") is First


def test_another_version_under_the_same_name_is_allowed() -> None:
    class Old(Event, name="core.event.evolving", version=1):
        pass

    class New(Event, name="core.event.evolving", version=2):
        pass

    assert registry.current("core.event.evolving") is New


def test_redefining_the_same_class_replaces_it() -> None:
    def define() -> type[Event]:
        class Redefined(Event, name="core.event.redefined"):
            x: int

        return Redefined

    first = define()
    second = define()
    assert first is not second
    assert registry.current("core.event.redefined") is second


def test_decoding_follows_the_classes_registered_after_it() -> None:
    def define(default: str) -> type[Event]:
        class Growing(Event, name="core.event.growing"):
            x: int
            label: str = default

        return Growing

    first = define("first")
    assert registry.decode("core.event.growing", 1, b'{"x": 1}') == first(x=1)
    second = define("second")
    decoded = registry.decode("core.event.growing", 1, b'{"x": 1}')
    assert type(decoded) is second, "a redefined class decodes its name from then on"
    assert decoded == second(x=1, label="second")

    class Newer(Event, name="core.event.growing", version=2):
        x: int

    with pytest.raises(EventDecodeError, match="no upcaster is registered from version 1"):
        registry.decode("core.event.growing", 1, b'{"x": 1}')
    assert registry.decode("core.event.growing", 2, b'{"x": 2}') == Newer(x=2)


@pytest.mark.parametrize("name", ["", 5])
def test_a_bad_name_is_a_value_error(name: Any) -> None:
    with pytest.raises(ValueError, match="event name"):

        class BadName(Event, name=name):
            pass


@pytest.mark.parametrize("version", [0, -1, True, 1.5, "2"])
def test_a_bad_version_is_a_value_error(version: Any) -> None:
    with pytest.raises(ValueError, match="event version"):

        class BadVersion(Event, name="core.event.bad-version", version=version):
            pass


def test_an_upcaster_is_registered_with_a_decorator_that_returns_the_function() -> None:
    class Shape(Event, name="core.event.upcast", version=2):
        size: int
        unit: str

    def add_unit(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "unit": "cm"}

    assert Shape.upcaster(from_version=1)(add_unit) is add_unit
    decoded = registry.decode("core.event.upcast", 1, b'{"size": 3}')
    assert decoded == Shape(size=3, unit="cm")


def test_a_second_upcaster_from_the_same_version_is_refused() -> None:
    class Twice(Event, name="core.event.upcast-twice", version=2):
        pass

    Twice.upcaster(from_version=1)(lambda data: data)
    with pytest.raises(ValueError, match="already registered"):
        Twice.upcaster(from_version=1)(lambda data: data)


@pytest.mark.parametrize("from_version", [0, True, "1"])
def test_an_upcaster_from_a_bad_version_is_refused(from_version: Any) -> None:
    with pytest.raises(ValueError, match="from_version"):

        @Order.upcaster(from_version=from_version)
        def upcast(data: dict[str, Any]) -> dict[str, Any]:
            return data


def test_events_encode_as_json_and_decode_back() -> None:
    event = Order(order_id="A1", amount=120.5)
    data = encode(event)
    assert isinstance(data, bytes)
    assert json.loads(data) == {"order_id": "A1", "amount": 120.5}
    assert registry.decode("core.order", 1, data) == event
    assert registry.decode("core.order", 1, data.decode()) == event


def test_the_package_never_uses_pickle_marshal_or_eval() -> None:
    forbidden_modules = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}
    forbidden_calls = {"eval", "exec"}
    package = Path(eventbus.__file__).parent
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [f"{path}: import {a.name}" for a in node.names if a.name.split(".")[0] in forbidden_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in forbidden_modules:
                found.append(f"{path}: from {node.module} import ...")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in forbidden_calls:
                found.append(f"{path}:{node.lineno}: {node.func.id}()")
    assert found == []
