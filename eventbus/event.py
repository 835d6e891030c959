"""Event classes, the registry of their stable names, and upcasting.

An event class is a frozen pydantic model with a stable *type name* and a
*version*. The name, not the Python path, is what stores keep, so a class can
move between modules without orphaning its history; the version lets a class
change shape while old records stay readable through upcasters.
"""

from __future__ import annotations

import math
import threading
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import pydantic_core
from pydantic import AliasChoices, BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from .exceptions import DuplicateEventType, EventDecodeError, UnknownEventType

__all__ = [
    "Event",
    "EventRegistry",
    "Upcaster",
    "check_round_trip",
    "check_storable",
    "encode",
    "needs_round_trip",
    "registry",
]

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
    rather than in a handler. Float fields refuse NaN and infinities
    (``allow_inf_nan=False``): JSON cannot carry them, so an event holding one
    could be published but never read back.
    """

    # ser_json_inf_nan: a non-finite float that bypassed validation (model_construct,
    # an Any field) is written as a NaN token, which `encode` spots cheaply and refuses
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, ser_json_inf_nan="constants")

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
        self._newest: dict[str, type[Event]] = {}  # name -> class of the highest version
        self._decoders: dict[str, tuple[int, Callable[[str | bytes], Event]]] = {}
        """name -> (its newest class's version, that class's ``validate_json``), made at
        the first decode of the name (see `decode`) and forgotten when the name's
        classes change."""
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
            self._decoders.pop(name, None)

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
        decoder = self._decoders.get(name)
        if decoder is None:
            decoder = self._decoder(name, seq)
        newest, validate_json = decoder
        try:
            if version == newest:
                return validate_json(data)
            cls = self._newest[name]
            where = _where(seq)
            if version > newest:
                raise EventDecodeError(
                    f"stored event {where}of type {name!r} has version {version}, newer than the "
                    f"newest registered class {_qualified(cls)} (version {newest})",
                    seq=seq,
                    type=name,
                )
            payload = pydantic_core.from_json(data)
            if not isinstance(payload, dict):
                raise EventDecodeError(
                    f"stored event {where}of type {name!r} version {version} no longer validates: "
                    "its data is not a JSON object",
                    seq=seq,
                    type=name,
                )
            steps = self._upcasters.get(name, {})
            for step in range(version, newest):
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
        except ValueError as exc:  # pydantic's ValidationError, or from_json's error on text that is not JSON
            raise EventDecodeError(
                f"stored event {_where(seq)}of type {name!r} version {version} no longer validates as "
                f"{_qualified(self._newest[name])}: {exc}",
                seq=seq,
                type=name,
            ) from exc

    def validator(self, name: str, version: int) -> Callable[[str | bytes], Event] | None:
        """The validator that decodes data of ``name`` stored at ``version``
        as it is, or None when `decode` must take a longer way (no class is
        registered under ``name``, or ``version`` is not its newest: the data
        needs upcasting, or is newer than the class). The validator raises
        pydantic's ``ValidationError`` (a `ValueError`), not `EventDecodeError`:
        for a caller that decodes many records and lets `decode` report a failure."""
        decoder = self._decoders.get(name)
        if decoder is None:
            try:
                decoder = self._decoder(name, None)
            except UnknownEventType:
                return None
        newest, validate_json = decoder
        return validate_json if version == newest else None

    def _decoder(self, name: str, seq: int | None) -> tuple[int, Callable[[str | bytes], Event]]:
        """What `decode` keeps for ``name``: its newest class's version and
        validator, read once. Each is a class attribute read through
        pydantic's metaclass, about 55 ns apiece, a third of what a decode
        added to the validator itself (822 ns against 486 for a small event).
        Registering a class under ``name`` forgets it; a class rebuilt with
        ``model_rebuild(force=True)`` after its first decode keeps decoding
        with the validator it had."""
        cls = self._newest.get(name)
        if cls is None:
            raise UnknownEventType(
                f"stored event {_where(seq)}has the type name {name!r}, and no event class is registered under it",
                seq=seq,
                type=name,
            )
        # read outside the lock: a validator not built yet builds itself here
        decoder = (cls.__event_version__, cls.__pydantic_validator__.validate_json)
        with self._lock:
            if self._newest.get(name) is cls:  # not replaced meanwhile
                self._decoders[name] = decoder
        return decoder


def encode(event: Event) -> bytes:
    """The JSON form of ``event`` that stores keep (pydantic's serializer, never pickle).

    Raises `ValueError` naming the field when the event holds a NaN or an
    infinity that bypassed validation (``model_construct``, an ``Any``
    field): JSON cannot carry it back.
    """
    data = event.__pydantic_serializer__.to_json(event)
    if b"NaN" in data or b"Infinity" in data:  # rare; the text may also just say so
        path = _non_finite(event, type(event).__qualname__)
        if path is not None:
            raise ValueError(
                f"{path} is not a finite number; JSON cannot carry NaN or infinities, so the event would not read back"
            )
    return data


def check_storable(cls: type) -> None:
    """Refuse an event class whose instances would not read back from a store as equal events.

    Called when a bus builds the route of a class (once, until the next
    subscribe changes the routes), so its cost is never paid per event.
    Raises `TypeError` for `Event` itself (it has no stored type of its
    own) and `ValueError` naming the field for what pydantic would write
    but not read back: an alias the serializer does not write, a
    computed field (refused by ``extra="forbid"``), an excluded field, a
    nested model whose floats accept NaN (written as ``null``). Nested
    models are checked too.
    """
    if cls is Event:
        raise TypeError(
            "cannot publish an instance of eventbus.Event itself: it has no stored type a reader could "
            "decode; publish an instance of an Event subclass"
        )
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        _check_model(cls, cls.__qualname__, set())


_TRUSTED_SERIALIZERS = frozenset({"pydantic._internal._generate_schema", "pydantic.networks"})
"""Modules of pydantic's own serializer functions that write what their type
reads (paths, IP addresses, URLs): a field of such a type needs no round trip
per event. Any other function (a user's, or pydantic's secret types, which
write a mask) does."""

_SERIALIZER_CONFIG = {"ser_json_temporal": "iso8601", "ser_json_timedelta": "iso8601"}
"""Core config keys that change how values are written, with their defaults."""


def needs_round_trip(cls: type[BaseModel]) -> bool:
    """Whether instances of ``cls`` must be round-tripped one by one (`check_round_trip`).

    A class-level check cannot see through a function: a custom serializer
    (``@field_serializer``, ``@model_serializer``, ``PlainSerializer`` /
    ``WrapSerializer`` annotations, ``json_encoders``), a value excluded by
    ``exclude_if``, or a model config that writes bytes, dates or durations
    in another form than it reads may write what reads back as another
    value, or not at all, depending on the value. True when the class or a
    model nested in it has one of those; false for the common class, whose
    events then cost nothing more per publish. Called with `check_storable`,
    when a bus builds the route of a class.
    """
    return _custom_serialization(cls.__pydantic_core_schema__)


def _custom_serialization(schema: object) -> bool:
    """Whether a core schema (walked whole: nested models and definitions included) writes through
    something other than pydantic's own serializers."""
    if isinstance(schema, list):
        return any(_custom_serialization(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    serialization = schema.get("serialization")
    if isinstance(serialization, dict):
        function = serialization.get("function")
        if getattr(function, "__module__", None) not in _TRUSTED_SERIALIZERS:
            return True
    if schema.get("serialization_exclude_if") is not None:
        return True
    config = schema.get("config")
    if schema.get("type") == "model" and isinstance(config, dict):
        if config.get("ser_json_bytes", "utf8") != config.get("val_json_bytes", "utf8"):
            return True
        if any(config.get(key, default) != default for key, default in _SERIALIZER_CONFIG.items()):
            return True
    return any(_custom_serialization(value) for value in schema.values() if isinstance(value, (dict, list)))


def check_round_trip(event: Event) -> None:
    """Refuse ``event`` unless the JSON pydantic writes for it validates back as an equal event.

    The per-event check of a class `needs_round_trip` says may not read back
    (run at each publish of such a class, never for the others). Raises
    `ValueError` naming the field that would not read back, what was written
    for it and what that reads back as.
    """
    cls = type(event)
    data = cls.__pydantic_serializer__.to_json(event)
    try:
        back = cls.__pydantic_validator__.validate_json(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        path = ".".join([cls.__qualname__, *(str(part) for part in error["loc"])])
        raise ValueError(
            f"{path} is written as {_written(data, error['loc'])} and does not read back ({error['msg']}); {_REMEDY}"
        ) from None
    if back != event:
        path, loc, mine, theirs = _first_difference(event, back, cls.__qualname__, ())
        raise ValueError(f"{path} is {mine!r}, written as {_written(data, loc)} and read back as {theirs!r}; {_REMEDY}")


_REMEDY = (
    "what pydantic writes (a custom serializer, exclude_if, a ser_json_* setting) must read back as the "
    "same value, so the event was not stored"
)


def _first_difference(
    original: BaseModel, back: BaseModel, where: str, loc: tuple[str, ...]
) -> tuple[str, tuple[str, ...], object, object]:
    """The path and location of the first field where ``back`` differs from ``original``, and both values."""
    for name in type(original).model_fields:
        mine, theirs = getattr(original, name, None), getattr(back, name, None)
        if mine != theirs:
            if isinstance(mine, BaseModel) and isinstance(theirs, BaseModel) and type(mine) is type(theirs):
                return _first_difference(mine, theirs, f"{where}.{name}", (*loc, name))
            return f"{where}.{name}", (*loc, name), mine, theirs
    return where, loc, original, back


def _written(data: bytes, loc: Sequence[int | str]) -> str:
    """The JSON written at ``loc`` inside ``data`` (all of it where ``loc`` leads nowhere)."""
    value: Any = pydantic_core.from_json(data)
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return data.decode(errors="replace")
    return pydantic_core.to_json(value).decode(errors="replace")


def _check_model(model: type[BaseModel], where: str, seen: set[type]) -> None:
    seen.add(model)
    config = model.model_config
    for name, info in model.model_fields.items():
        path = f"{where}.{name}"
        written = _written_key(name, info, config)
        if written not in _readable_keys(name, info, config):
            raise ValueError(
                f"{path} is written as {written!r} but read as {sorted(_readable_keys(name, info, config))}: "
                "an event with an alias would not read back; set validate_by_name=True (or "
                "populate_by_name=True) in its model_config, or drop the alias"
            )
        if info.exclude is True:
            raise ValueError(f"{path} is excluded from serialization (exclude=True), so it would not read back")
        if config.get("allow_inf_nan", True) and _mentions_float(info.annotation):
            raise ValueError(
                f"{path} is a float that accepts NaN and infinities, which JSON stores as null; "
                f"set model_config = ConfigDict(allow_inf_nan=False) on {model.__qualname__}"
            )
        for nested in _models_in(info.annotation):
            if nested not in seen:
                _check_model(nested, path, seen)
    computed = model.model_computed_fields
    if computed and config.get("extra") != "ignore":
        name = next(iter(computed))
        raise ValueError(
            f"{where}.{name} is a computed field: it is written, and then refused on reading by "
            f"extra={config.get('extra', 'ignore')!r}; make it a property, or set extra='ignore'"
        )


def _written_key(name: str, info: FieldInfo, config: ConfigDict) -> str:
    if config.get("serialize_by_alias"):
        return info.serialization_alias or info.alias or name
    return name


def _readable_keys(name: str, info: FieldInfo, config: ConfigDict) -> set[str]:
    alias = info.validation_alias
    keys: set[str] = set()
    if alias is None or config.get("validate_by_name") or config.get("populate_by_name"):
        keys.add(name)
    if alias is not None and config.get("validate_by_alias", True):
        if isinstance(alias, str):
            keys.add(alias)
        elif isinstance(alias, AliasChoices):
            keys.update(choice for choice in alias.choices if isinstance(choice, str))
    return keys


def _type_args(annotation: Any) -> Iterable[Any]:
    yield annotation
    for arg in typing.get_args(annotation):
        yield from _type_args(arg)


def _mentions_float(annotation: Any) -> bool:
    return any(arg is float for arg in _type_args(annotation))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [arg for arg in _type_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel)]


def _non_finite(value: Any, path: str) -> str | None:
    """The path of the first NaN or infinity inside ``value``, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} ({value!r})"
    if isinstance(value, BaseModel):
        items: Iterable[tuple[Any, Any]] = ((name, getattr(value, name, None)) for name in type(value).model_fields)
    elif isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if isinstance(value, BaseModel) else f"{path}[{key!r}]")
        if found is not None:
            return found
    return None


def _where(seq: int | None) -> str:
    """``"seq N "`` for decode errors (built only when one is raised)."""
    return f"seq {seq} " if seq is not None else ""


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


registry = EventRegistry()
"""The process-wide registry every `Event` subclass registers itself in."""
