"""The exception hierarchy: the tree drawn in ``eventbus.exceptions``'s
docstring is the real class hierarchy, and every exported error is in it."""

from __future__ import annotations

import re

import pytest
from core_events import Ping

import eventbus
import eventbus.exceptions
from eventbus import BusClosed, EventBus, EventBusError, EventDecodeError, HandlerTimeout, StoreNotFound

TREE_LINE = re.compile(r"^(?P<indent>(?:│   |    )*)(?P<branch>[├└]── )?(?P<name>[A-Za-z]+)(?:\s|$)")


def drawn_tree() -> dict[str, str | None]:
    """Each class name in the docstring's tree -> the name of its parent (None for the root)."""
    doc = eventbus.exceptions.__doc__
    assert doc is not None
    block = doc.split("```", 2)[1]
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in block.strip("\n").splitlines():
        match = TREE_LINE.match(line)
        assert match is not None, f"cannot read the tree line {line!r}"
        depth = len(match["indent"]) // 4 + (1 if match["branch"] else 0)
        del stack[depth:]
        parents[match["name"]] = stack[-1] if stack else None
        stack.append(match["name"])
    return parents


def test_the_tree_is_read_whole() -> None:
    tree = drawn_tree()
    assert tree["EventBusError"] is None
    assert tree["BusClosed"] == "EventBusError"
    assert tree["UnknownEventType"] == "EventDecodeError"
    assert tree["StoreNotFound"] == "StoreError"
    assert tree["HistoryTruncated"] == "EventBusError"
    assert tree["LeaseLost"] == "StoreError"
    assert tree["TransactionError"] == "EventBusError"
    assert len(tree) == 16


@pytest.mark.parametrize(("name", "parent"), sorted(drawn_tree().items(), key=lambda item: item[0]))
def test_each_drawn_class_is_exported_and_derives_directly_from_its_drawn_parent(name: str, parent: str | None) -> None:
    cls = getattr(eventbus, name)
    assert name in eventbus.__all__
    assert issubclass(cls, Exception)
    if parent is None:
        assert cls.__bases__ == (Exception,)
    else:
        # the drawn parent comes first; a built-in base may follow (HandlerTimeout is also a TimeoutError)
        assert cls.__bases__[0] is getattr(eventbus, parent)
        assert all(base.__module__ == "builtins" for base in cls.__bases__[1:])


def test_every_exported_error_is_drawn_in_the_tree() -> None:
    exported = {
        name
        for name in eventbus.__all__
        if isinstance(getattr(eventbus, name), type) and issubclass(getattr(eventbus, name), BaseException)
    }
    assert exported == set(drawn_tree())
    # what a handler attempt fails with is also a TimeoutError, so middleware
    # that catches timeouts treats it as one
    assert issubclass(HandlerTimeout, TimeoutError)


def test_every_error_named_in_the_design_is_an_event_bus_error() -> None:
    for name in (
        "BusClosed",
        "BackpressureError",
        "UnknownEventType",
        "EventDecodeError",
        "DuplicateEventType",
        "DuplicateSubscription",
        "CausationLoopError",
        "StoreError",
    ):
        assert issubclass(getattr(eventbus, name), EventBusError), name


def test_the_exceptions_module_exports_what_the_package_does() -> None:
    assert set(eventbus.exceptions.__all__) == set(drawn_tree())
    assert set(eventbus.exceptions.__all__) <= set(eventbus.__all__)


def test_every_error_class_has_a_docstring() -> None:
    for name in drawn_tree():
        assert getattr(eventbus, name).__doc__, name


async def test_one_except_clause_catches_what_the_bus_raises() -> None:
    bus = EventBus()
    with pytest.raises(EventBusError) as caught:
        await bus.publish(Ping(n=1))
    assert type(caught.value) is BusClosed


def test_a_missing_store_plugin_is_a_store_error_naming_the_scheme() -> None:
    with pytest.raises(eventbus.StoreError) as caught:
        EventBus("nosuchdb://somewhere/x")
    assert isinstance(caught.value, StoreNotFound)
    assert "'nosuchdb'" in str(caught.value)


def test_decode_errors_carry_the_seq_and_type() -> None:
    error = EventDecodeError("bad payload", seq=3, type="core.ping")
    assert (error.seq, error.type, str(error)) == (3, "core.ping", "bad payload")
    unknown = eventbus.UnknownEventType("no class", type="x")
    assert isinstance(unknown, EventDecodeError)
    assert (unknown.seq, unknown.type) == (None, "x")
