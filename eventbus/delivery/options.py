"""A subscription's options, written once: the keyword arguments of
`EventBus.subscribe` (`SubscribeOptions`) and their validated, defaulted form
(`SubscriptionOptions`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypedDict

from ..event import Event
from ..middleware.base import Middleware
from ..policies import BACKPRESSURE_POLICIES, Backpressure, Retry

__all__ = ["DEFAULT_MAX_PENDING", "Predicate", "SubscribeOptions", "SubscriptionOptions", "compile_where"]

DEFAULT_MAX_PENDING = 10_000

Predicate = Callable[[Any], bool]

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    SubscribedT = TypeVar("SubscribedT", bound=Event, default=Any)
else:
    # ``default=`` for type checkers only, as `EventT` in record.py does
    from typing import TypeVar

    SubscribedT = TypeVar("SubscribedT", bound=Event)


class SubscribeOptions(TypedDict, Generic[SubscribedT], total=False):
    """The keyword options of `EventBus.subscribe`; see `SubscriptionOptions`.

    ``SubscribeOptions[OrderPlaced]`` types ``where`` and ``key`` as
    functions of an ``OrderPlaced``, so a type checker flags
    ``where=lambda e: e.amont > 1``; bare ``SubscribeOptions`` takes any event.
    """

    where: Callable[[SubscribedT], bool] | Mapping[str, Any] | None
    retry: Retry | None
    timeout: float | None
    max_pending: int
    backpressure: Backpressure
    concurrency: int
    key: Callable[[SubscribedT], Hashable] | None
    from_seq: int | None
    durable: bool
    in_thread: bool
    middleware: Sequence[Middleware]


@dataclass(frozen=True)
class SubscriptionOptions:
    """Everything `EventBus.subscribe` accepts besides the type and handler,
    validated on construction.

    Attributes:
        name: unique on the bus; defaults to the handler's qualified name.
        where: a predicate on the event, or a mapping field -> expected value.
        retry: a `Retry` policy; without one, a failure is final.
        timeout: seconds per attempt before it is cancelled and failed.
        max_pending: the queue bound (see ``backpressure``).
        backpressure: ``"block"``, ``"drop_oldest"``, ``"drop_newest"`` or ``"spill"``.
        concurrency: worker tasks; with ``key``, events of one key stay in order.
        key: a function of the event giving its ordering key.
        from_seq: deliver stored history from this seq, then continue live.
        durable: checkpoint the position in the store under ``name`` and resume from it.
        in_thread: run a sync handler in a worker thread.
        middleware: delivery middleware of this subscription only.
    """

    name: str
    where: Predicate | Mapping[str, Any] | None = None
    retry: Retry | None = None
    timeout: float | None = None
    max_pending: int = DEFAULT_MAX_PENDING
    backpressure: Backpressure = "block"
    concurrency: int = 1
    key: Callable[[Any], Hashable] | None = None
    from_seq: int | None = None
    durable: bool = False
    in_thread: bool = False
    middleware: Sequence[Middleware] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"subscription name must be a non-empty string, got {self.name!r}")
        if self.where is not None and not callable(self.where) and not isinstance(self.where, Mapping):
            raise TypeError(f"where= must be a predicate or a mapping of field -> value, got {self.where!r}")
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise TypeError(f"retry= must be a Retry, got {self.retry!r}")
        if self.timeout is not None and not (_is_number(self.timeout) and 0 < self.timeout < math.inf):
            raise ValueError(f"timeout= must be a positive number of seconds, got {self.timeout!r}")
        if not _is_int(self.max_pending) or self.max_pending < 1:
            raise ValueError(f"max_pending= must be an int >= 1, got {self.max_pending!r}")
        if self.backpressure not in BACKPRESSURE_POLICIES:
            raise ValueError(f"backpressure= must be one of {sorted(BACKPRESSURE_POLICIES)}, got {self.backpressure!r}")
        if not _is_int(self.concurrency) or self.concurrency < 1:
            raise ValueError(f"concurrency= must be an int >= 1, got {self.concurrency!r}")
        if self.key is not None and not callable(self.key):
            raise TypeError(f"key= must be a function of the event, got {self.key!r}")
        if self.from_seq is not None and (not _is_int(self.from_seq) or self.from_seq < 1):
            raise ValueError(f"from_seq= must be an int >= 1, got {self.from_seq!r}")
        if not isinstance(self.durable, bool):
            raise TypeError(f"durable= must be a bool, got {self.durable!r}")
        object.__setattr__(self, "middleware", tuple(self.middleware))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compile_where(where: Predicate | Mapping[str, Any] | None, types: tuple[type[Event], ...]) -> Predicate | None:
    """``where=`` as a predicate: a mapping becomes field-by-field equality,
    checked against the fields of ``types`` (`ValueError` naming unknown ones)."""
    if where is None or callable(where):
        return where
    expected = dict(where)
    for cls in types:
        unknown = [name for name in expected if name not in cls.model_fields]
        if unknown and cls is not Event:
            raise ValueError(f"where= names fields {unknown} that {cls.__qualname__} does not have")

    def matches(event: Any) -> bool:
        return all(getattr(event, name) == value for name, value in expected.items())

    return matches
