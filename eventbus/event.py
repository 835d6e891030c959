"""Event classes, the registry of their stable names, and upcasting.

An event class is a frozen pydantic model with a stable *type name* and a
*version*. The name, not the Python path, is what stores keep, so a class can
move between modules without orphaning its history; the version lets a class
change shape while old records stay readable through upcasters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

from .exceptions import DuplicateEventType, EventDecodeError, UnknownEventType

__all__ = ["Event", "EventRegistry", "Upcaster", "registry"]

E = TypeVar("E", bound="Event")
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the JSON object of version *n* of an event into that of version *n + 1*."""


class Event(BaseModel):
    """Base class of every event.

    ```python
    class OrderPlaced(Event, name="order.placed", version=1):
        order_id: str
        amount: float
    ```

    ``name`` defaults to ``"module.QualName"`` and ``version`` to 1. Instances
    are frozen and reject unknown fields, so a typo fails where it is made
    rather than in a handler.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    __event_type__: ClassVar[str] = "eventbus.Event"
    __event_version__: ClassVar[int] = 1

    def __init_subclass__(cls, *, name: str | None = None, version: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        type_name = name if name is not None else f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(type_name, str) or not type_name:
            raise ValueError(f"event name of {cls.__qualname__} must be a non-empty string, got {name!r}")
        if version is None:
            version = 1
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"event version of {cls.__qualname__} must be an int >= 1, got {version!r}")
        cls.__event_type__ = type_name
        cls.__event_version__ = version

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        registry.register(cls)

    @classmethod
    def upcaster(cls, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function that upgrades stored ``from_version`` data one step.

        ```python
        @OrderPlaced.upcaster(from_version=1)
        def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
            return {**data, "currency": "EUR"}
        ```

        Records stored at version 1 are then read as the current class; a
        chain of upcasters leads from any older version to the newest.
        """

        def decorator(func: Upcaster) -> Upcaster:
            registry.add_upcaster(cls.__event_type__, from_version, func)
            return func

        return decorator


class EventRegistry:
    """Maps stable type names (and versions) to event classes.

    There is one registry per process, `eventbus.event.registry`: event
    classes register themselves when they are defined, as pydantic models and
    SQLAlchemy mappings do. Redefining a class with the same module and
    qualified name (a reloaded module, a test that runs twice) replaces the
    old definition; two *different* classes under one name and version raise
    `DuplicateEventType`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._classes: dict[str, dict[int, type[Event]]] = {}
        self._newest: dict[str, type[Event]] = {}  # name -> class of the highest version (decode's fast path)
        self._upcasters: dict[str, dict[int, Upcaster]] = {}

    def register(self, cls: type[Event]) -> None:
        """Register ``cls`` under its type name and version."""
        name, version = cls.__event_type__, cls.__event_version__
        with self._lock:
            versions = self._classes.setdefault(name, {})
            existing = versions.get(version)
            if existing is not None and _qualified(existing) != _qualified(cls):
                raise DuplicateEventType(
                    f"event type {name!r} version {version} is already registered by "
                    f"{_qualified(existing)}; {_qualified(cls)} must use another name or version"
                )
            versions[version] = cls
            self._newest[name] = versions[max(versions)]

    def add_upcaster(self, name: str, from_version: int, func: Upcaster) -> None:
        """Register ``func`` to upgrade ``name`` data from ``from_version`` to the next."""
        if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
            raise ValueError(f"from_version must be an int >= 1, got {from_version!r}")
        with self._lock:
            steps = self._upcasters.setdefault(name, {})
            if from_version in steps:
                raise ValueError(f"an upcaster from version {from_version} of {name!r} is already registered")
            steps[from_version] = func

    def names(self) -> list[str]:
        """Every registered type name, sorted."""
        with self._lock:
            return sorted(self._classes)

    def upcasters(self, name: str) -> dict[int, Upcaster]:
        """The upcasters registered for ``name``, by the version each upgrades from."""
        with self._lock:
            return dict(sorted(self._upcasters.get(name, {}).items()))

    def current(self, name: str) -> type[Event]:
        """The newest registered class for ``name``; `UnknownEventType` if none."""
        cls = self._newest.get(name)
        if cls is None:
            raise UnknownEventType(f"no event class is registered under the type name {name!r}", type=name)
        return cls

    def names_for(self, classes: Iterable[type[Event]]) -> frozenset[str] | None:
        """Type names whose current class is a subclass of any of ``classes``.

        ``None`` means every name (one of ``classes`` is `Event` itself).
        """
        wanted = tuple(classes)
        if Event in wanted:
            return None
        with self._lock:
            names = list(self._classes)
        return frozenset(name for name in names if issubclass(self.current(name), wanted))

    def decode(self, name: str, version: int, data: str | bytes, *, seq: int | None = None) -> Event:
        """Validate stored JSON ``data`` as the current class for ``name``.

        Data of an older version goes through the registered upcasters first;
        raises `UnknownEventType` or `EventDecodeError` naming the seq and type
        (also when an upcaster raises: the decode error's cause is its exception).
        """
        cls = self._newest.get(name)
        if cls is None:
            raise UnknownEventType(
                f"stored event {_where(seq)}has the type name {name!r}, and no event class is registered under it",
                seq=seq,
                type=name,
            )
        try:
            if version == cls.__event_version__:
                # the validator itself: model_validate_json's wrapper costs a third of a decode
                event: Event = cls.__pydantic_validator__.validate_json(data)
                return event
            where = _where(seq)
            if version > cls.__event_version__:
                raise EventDecodeError(
                    f"stored event {where}of type {name!r} has version {version}, newer than the "
                    f"newest registered class {_qualified(cls)} (version {cls.__event_version__})",
                    seq=seq,
                    type=name,
                )
            payload: Any = pydantic.TypeAdapter(dict[str, Any]).validate_json(data)
            steps = self._upcasters.get(name, {})
            for step in range(version, cls.__event_version__):
                upcast = steps.get(step)
                if upcast is None:
                    raise EventDecodeError(
                        f"stored event {where}of type {name!r} has version {version}, and no upcaster "
                        f"is registered from version {step} (see Event.upcaster)",
                        seq=seq,
                        type=name,
                    )
                try:
                    payload = upcast(payload)
                except Exception as exc:
                    raise EventDecodeError(
                        f"stored event {where}of type {name!r} version {version}: the upcaster from version "
                        f"{step} ({getattr(upcast, '__qualname__', repr(upcast))}) failed: {exc!r}",
                        seq=seq,
                        type=name,
                    ) from exc
            return cls.model_validate(payload)
        except pydantic.ValidationError as exc:
            raise EventDecodeError(
                f"stored event {_where(seq)}of type {name!r} version {version} no longer validates as "
                f"{_qualified(cls)}: {exc}",
                seq=seq,
                type=name,
            ) from exc


def encode(event: Event) -> bytes:
    """The JSON form of ``event`` that stores keep (pydantic's serializer, never pickle)."""
    return event.__pydantic_serializer__.to_json(event)


def _where(seq: int | None) -> str:
    """``"seq N "`` for decode errors (built only when one is raised)."""
    return f"seq {seq} " if seq is not None else ""


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


registry = EventRegistry()
"""The process-wide registry every `Event` subclass registers itself in."""
