"""Reading a handler's signature: which events it wants and how to call it.

A handler is a function (sync or async) taking ``(event)`` or
``(event, record)``; a projection's takes a `Transaction` too, as a
parameter annotated with it (`transaction_parameter`). Its event types come
from the first parameter's annotation unless given explicitly; a ``Union``
means each member. Given explicitly, they must be what that annotation
accepts (`event_types`), as `HandlerDecorator` makes type checkers see.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, Union

import anyio.to_thread

from .event import Event
from .record import Record
from .transaction import Transaction

__all__ = [
    "Handle",
    "HandlerDecorator",
    "ProjectionCall",
    "event_types",
    "handler_name",
    "is_async",
    "is_plain_async",
    "is_type_spec",
    "make_handle",
    "transaction_parameter",
]

Handle = Callable[[Record], Awaitable[None]]
"""A delivery step: takes the record, returns when the handler is done. The
innermost one calls the user's handler; middleware wrap it."""

E = TypeVar("E", bound=Event)
P = ParamSpec("P")
R = TypeVar("R")


class HandlerDecorator(Protocol[E]):
    """What ``bus.subscribe(OrderPlaced, **options)`` returns: a decorator
    taking a handler whose first parameter accepts an ``OrderPlaced`` (the
    class, a base of it, or a union holding it), so a type checker reports
    ``@bus.subscribe(OrderPlaced)`` on ``def h(event: PaymentCaptured)``.

    It returns the handler itself; type checkers see it as the handler's
    signature with that first parameter typed ``OrderPlaced`` (and
    positional-only): typing has no way to say "the same type, which must
    also accept ``OrderPlaced``".
    """

    def __call__(self, handler: Callable[Concatenate[E, P], R], /) -> Callable[Concatenate[E, P], R]: ...


def is_type_spec(target: Any) -> bool:
    """True when ``target`` names event types (a class, a tuple or a union), not a handler."""
    return isinstance(target, (type, tuple, types.UnionType)) or hasattr(target, "__origin__")


def event_types(spec: Any, handler: Callable[..., Any] | None) -> tuple[type[Event], ...]:
    """The event classes a subscription is for.

    ``spec`` is what the user passed (a class, a Union, a tuple of classes) or
    None to read the handler's first parameter annotation.

    Given both, every class of ``spec`` must be one the handler's first
    parameter accepts when it is annotated with Event classes (`TypeError`
    naming both otherwise): an ``OrderPlaced`` is never handed to a handler
    declared for ``PaymentCaptured``.
    """
    explicit = spec is not None
    if spec is None:
        if handler is None:
            raise TypeError("subscribe() needs an event type or a handler to read it from")
        spec = _first_annotation(handler)
    members = _union_members(spec)
    for member in members:
        if not (isinstance(member, type) and issubclass(member, Event)):
            raise TypeError(f"can only subscribe to Event subclasses, got {member!r}")
    classes = tuple(dict.fromkeys(members))
    if explicit and handler is not None:
        _check_accepted(handler, classes)
    return classes


def _check_accepted(handler: Callable[..., Any], classes: tuple[type[Event], ...]) -> None:
    accepted = _declared_event_types(handler)
    if accepted is None:
        return
    refused = [cls.__qualname__ for cls in classes if not issubclass(cls, accepted)]
    if refused:
        declared = " | ".join(cls.__qualname__ for cls in accepted)
        raise TypeError(
            f"handler {_name(handler)} takes {declared}, so it cannot be subscribed to {', '.join(refused)}; "
            "subscribe it to what its first parameter accepts, or widen that annotation"
        )


def _declared_event_types(handler: Callable[..., Any]) -> tuple[type[Event], ...] | None:
    """The Event classes the handler's first parameter is annotated with, or
    None when the annotation is absent, unresolvable or not only Event
    classes (``Any``, ``object``, a protocol): then nothing is checked."""
    try:
        annotation = _first_hint(handler)
    except (NameError, TypeError):
        return None
    members = _union_members(annotation)
    if all(isinstance(member, type) and issubclass(member, Event) for member in members):
        return members
    return None


def _union_members(spec: Any) -> tuple[Any, ...]:
    if isinstance(spec, tuple):
        return tuple(member for item in spec for member in _union_members(item))
    if typing.get_origin(spec) in (Union, types.UnionType):
        return tuple(member for arg in typing.get_args(spec) for member in _union_members(arg))
    return (spec,)


def _first_annotation(handler: Callable[..., Any]) -> Any:
    try:
        annotation = _first_hint(handler)
    except NameError as exc:
        raise TypeError(
            f"cannot resolve the annotation of {_name(handler)} ({exc}); pass the event type to subscribe()"
        ) from exc
    if annotation is inspect.Parameter.empty:
        raise TypeError(
            f"handler {_name(handler)} has no annotation on its first parameter; "
            "annotate it with an Event class or pass the type to subscribe()"
        )
    return annotation


def _first_hint(handler: Callable[..., Any]) -> Any:
    """The resolved annotation of the handler's first positional parameter
    (``inspect.Parameter.empty`` when it has none); `TypeError` when it takes
    no argument, `NameError` when the annotation cannot be resolved."""
    params = _positional_parameters(handler)
    if not params:
        raise TypeError(f"handler {_name(handler)} takes no argument; it must take (event) or (event, record)")
    return typing.get_type_hints(_unwrap(handler)).get(params[0].name, inspect.Parameter.empty)


_TRANSACTION_ANNOTATIONS = (Transaction, "Transaction", "eventbus.Transaction")
"""What a projection's parameter is annotated with: the class, or its name as written when unresolved."""


def transaction_parameter(handler: Callable[..., Any]) -> int | None:
    """The index of the positional parameter of ``handler`` annotated
    `Transaction` (1 or 2: after the event, and after the record if it takes
    one), or None when it has none: then it is no projection."""
    params = _positional_parameters(handler)
    try:
        hints = typing.get_type_hints(_unwrap(handler))
    except NameError:  # another parameter's annotation cannot be resolved: read this one as written
        hints = {param.name: param.annotation for param in params}
    found = [index for index, param in enumerate(params) if hints.get(param.name) in _TRANSACTION_ANNOTATIONS]
    if not found:
        return None
    if len(found) > 1 or found[0] == 0 or len(params) > 3:
        raise TypeError(
            f"handler {_name(handler)} of a projection must take (event, tx: Transaction) or "
            "(event, record, tx: Transaction)"
        )
    return found[0]


def _unwrap(handler: Callable[..., Any]) -> Callable[..., Any]:
    """The function whose annotations and name describe ``handler``."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    if inspect.isroutine(handler):
        return handler
    call: Callable[..., Any] = type(handler).__call__  # a callable object: its annotations live on __call__
    return call


def _positional_parameters(handler: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot read the signature of handler {_name(handler)}") from exc
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in signature.parameters.values() if p.kind in kinds]


def _name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)


def is_async(handler: Callable[..., Any]) -> bool:
    """True for ``async def`` functions and objects with an ``async def __call__``."""
    if inspect.iscoroutinefunction(handler):
        return True
    return not inspect.isroutine(handler) and inspect.iscoroutinefunction(type(handler).__call__)


def is_plain_async(handler: Callable[..., Any]) -> bool:
    """True for an async handler taking just ``(event)``: one the worker can call directly."""
    return is_async(handler) and len(_positional_parameters(handler)) == 1


def make_handle(handler: Callable[..., Any], *, in_thread: bool = False) -> Handle:
    """The innermost delivery step calling ``handler`` with the event (and record).

    Sync handlers run on the event loop, or in a worker thread with
    ``in_thread=True`` (the thread is abandoned, not killed, if a timeout
    cancels the delivery). A sync callable that returns an awaitable (an
    ``async def`` behind an ordinary decorator, ``lambda e: work(e)``) has it
    awaited, so the delivery ends when that work does. Generator functions,
    sync or async, raise `TypeError`: their body would never run.
    """
    if inspect.isasyncgenfunction(handler) or inspect.isgeneratorfunction(handler) or _has_generator_call(handler):
        raise TypeError(
            f"handler {_name(handler)} is a generator function: calling it only creates a generator and its "
            "body never runs; make it a plain (async) function"
        )
    params = _positional_parameters(handler)
    required = [p for p in params if p.default is inspect.Parameter.empty]
    if not params or len(required) > 2:
        raise TypeError(f"handler {_name(handler)} must take (event) or (event, record)")
    wants_record = len(params) >= 2
    if is_async(handler):
        if in_thread:
            raise ValueError(f"in_thread=True is for sync handlers; {_name(handler)} is async")
        # plain functions handing back the handler's coroutine: an ``async def``
        # wrapper would add a coroutine frame to every delivery under middleware
        if wants_record:

            def call_async_with_record(record: Record) -> Awaitable[None]:
                return handler(record.event, record)  # type: ignore[no-any-return]

            return call_async_with_record

        def call_async(record: Record) -> Awaitable[None]:
            return handler(record.event)  # type: ignore[no-any-return]

        return call_async

    if in_thread:

        async def call_in_thread(record: Record) -> None:
            args = (record.event, record) if wants_record else (record.event,)
            (result,) = await anyio.to_thread.run_sync(_boxed, handler, *args, abandon_on_cancel=True)
            if result is not None:
                await _finish(handler, result)

        return call_in_thread

    if wants_record:

        async def call_sync_with_record(record: Record) -> None:
            result = handler(record.event, record)
            if result is not None:
                await _finish(handler, result)

        return call_sync_with_record

    async def call_sync(record: Record) -> None:
        result = handler(record.event)
        if result is not None:
            await _finish(handler, result)

    return call_sync


class ProjectionCall:
    """Calls a projection's ``handler`` with a record's event (and the record)
    and the delivery's `Transaction`: ``(event, tx)`` or ``(event, record, tx)``,
    as its positional parameter ``transaction_at`` (see `transaction_parameter`)
    says. A sync handler runs on the event loop (its writes go through a
    driver that is the loop's, or are quick SQLite statements), and what it
    returns is awaited when awaitable."""

    __slots__ = ("_asynchronous", "_handler", "_wants_record")

    def __init__(self, handler: Callable[..., Any], transaction_at: int) -> None:
        if inspect.isasyncgenfunction(handler) or inspect.isgeneratorfunction(handler) or _has_generator_call(handler):
            raise TypeError(f"handler {_name(handler)} is a generator function: its body would never run")
        self._handler = handler
        self._wants_record = transaction_at == 2
        self._asynchronous = is_async(handler)

    async def __call__(self, record: Record, tx: Transaction) -> None:
        handler = self._handler
        args = (record.event, record, tx) if self._wants_record else (record.event, tx)
        if self._asynchronous:
            await handler(*args)
            return
        result = handler(*args)
        if result is not None:
            await _finish(handler, result)


def _boxed(handler: Callable[..., Any], *args: Any) -> tuple[object]:
    """``handler(*args)`` in a tuple: trio refuses a thread function whose result is a coroutine."""
    return (handler(*args),)


async def _finish(handler: Callable[..., Any], result: object) -> None:
    """Await what a sync handler returned when it is awaitable; refuse a generator it returned."""
    if inspect.isawaitable(result):
        await result
    elif inspect.isasyncgen(result) or inspect.isgenerator(result):
        result_kind = type(result).__name__
        raise TypeError(f"handler {_name(handler)} returned a {result_kind}, whose body never runs")


def _has_generator_call(handler: Callable[..., Any]) -> bool:
    """True for a callable object whose ``__call__`` is a (async) generator function."""
    if inspect.isroutine(handler) or isinstance(handler, functools.partial):
        return False
    call = type(handler).__call__
    return inspect.isasyncgenfunction(call) or inspect.isgeneratorfunction(call)


def handler_name(handler: Callable[..., Any]) -> str:
    """The default subscription name: the handler's qualified name."""
    target = _unwrap(handler)
    if not inspect.isroutine(handler) and not isinstance(handler, functools.partial):
        return type(handler).__qualname__
    return str(getattr(target, "__qualname__", None) or repr(handler))
