"""`Record`: an event as the store holds it, with its sequence number and metadata."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic
from uuid import UUID

from .event import Event, encode, registry

__all__ = ["EventT", "NO_HEADERS", "Record", "decode_events"]

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    EventT = TypeVar("EventT", bound=Event, covariant=True, default=Event)
else:
    # `typing.TypeVar` takes ``default=`` (PEP 696) only from Python 3.13, and only
    # type checkers need it: they read typing_extensions from their own stubs, so
    # the default costs no runtime dependency.
    from typing import TypeVar

    EventT = TypeVar("EventT", bound=Event, covariant=True)
"""The event class a `Record` or `Replay` holds (`Event` when not given, so bare ``Record`` works)."""

NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""The shared, read-only headers of a record published without headers."""

_NS_PER_SECOND = 1_000_000_000


class Record(Generic[EventT]):
    """One stored event: what `EventBus.replay` yields and handlers may receive.

    ``Record[OrderPlaced]`` is a record whose ``event`` is an ``OrderPlaced``
    (what ``bus.replay(OrderPlaced)`` yields); bare ``Record`` means
    ``Record[Event]``.

    Attributes:
        seq: position in the store, from 1, one more per appended event.
        event: the `Event` (decoded on first access for records read from a
            durable store; a payload that no longer validates raises
            `EventDecodeError` there).
        event_id: a UUID that follows the event across stores and processes.
        type: the registered type name; ``version``: the class version stored.
        recorded_at: when the bus accepted the event (aware UTC datetime).
        correlation_id: the id of the first event of the chain this one
            belongs to (its own id for an event published outside a handler).
        causation_id: the id of the event whose handler published this one.
        headers: string metadata given to ``publish`` (read-only).
        decoded: the event if it is at hand (published in this process, or
            read and decoded already), else None; ``event`` decodes it.
        depth: the causation depth: 0 for an event published outside a
            handler, one more than its cause's otherwise. Stores keep it, so
            ``max_causation_depth`` holds across processes and restarts.

    Records are cheap on purpose: ids and timestamps are kept in their compact
    form and turned into `UUID` / `datetime` objects only when read.
    """

    __slots__ = (
        "_at",
        "_causation",
        "_correlation",
        "_data",
        "_id",
        "decoded",
        "depth",
        "headers",
        "seq",
        "type",
        "version",
    )

    def __init__(
        self,
        seq: int,
        event: EventT | None,
        type: str,
        version: int,
        event_id: UUID | int,
        recorded_at: datetime | int,
        correlation_id: UUID | int | None = None,
        causation_id: UUID | int | None = None,
        headers: Mapping[str, str] = NO_HEADERS,
        depth: int = 0,
        data: bytes | str | None = None,
    ) -> None:
        self.seq = seq
        self.type = type
        self.version = version
        self.headers = headers
        self.depth = depth
        self.decoded = event
        self._data = data
        self._id = event_id
        self._at = recorded_at
        self._correlation = correlation_id
        self._causation = causation_id

    @classmethod
    def from_stored(
        cls,
        *,
        seq: int,
        type: str,
        version: int,
        data: bytes | str,
        event_id: UUID | int | str | bytes,
        recorded_at: datetime | int,
        correlation_id: UUID | int | str | bytes | None = None,
        causation_id: UUID | int | str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        depth: int = 0,
    ) -> Record:
        """Build a record from a store row; the event is decoded lazily.

        Ids may be given as `UUID`, int, 16 bytes or text; ``recorded_at`` as
        an aware datetime or integer nanoseconds since the epoch; ``depth`` is
        the stored causation depth (how many handlers' publishes led to this
        event), which keeps ``max_causation_depth`` across processes.
        """
        return cls(
            seq,
            None,
            type,
            version,
            _as_uuid_or_int(event_id),
            recorded_at,
            None if correlation_id is None else _as_uuid_or_int(correlation_id),
            None if causation_id is None else _as_uuid_or_int(causation_id),
            MappingProxyType(dict(headers)) if headers else NO_HEADERS,
            depth,
            data,
        )

    @property
    def event(self) -> EventT:
        event = self.decoded
        if event is None:
            assert self._data is not None
            # whoever made this a Record[X] read it for X's type names (see Replay);
            # annotated rather than cast(), which is a call per decoded record
            decoded: Any = registry.decode(self.type, self.version, self._data, seq=self.seq)
            event = self.decoded = decoded
        return event

    @property
    def data(self) -> bytes | str:
        """The event's stored JSON (encoded from the event when not read from a store)."""
        data = self._data
        if data is None:
            data = self._data = encode(self.event)
        return data

    @property
    def event_id(self) -> UUID:
        value = self._id
        if isinstance(value, int):
            value = self._id = UUID(int=value)
        return value

    @property
    def recorded_at(self) -> datetime:
        value = self._at
        if isinstance(value, int):
            value = self._at = datetime.fromtimestamp(value / _NS_PER_SECOND, UTC)
        return value

    @property
    def recorded_at_ns(self) -> int:
        """``recorded_at`` as integer nanoseconds since the epoch (what stores keep)."""
        value = self._at
        if isinstance(value, int):
            return value
        return int(value.timestamp() * _NS_PER_SECOND)

    @property
    def correlation_id(self) -> UUID:
        value = self._correlation
        if value is None:
            return self.event_id
        if isinstance(value, int):
            value = self._correlation = UUID(int=value)
        return value

    @property
    def causation_id(self) -> UUID | None:
        value = self._causation
        if isinstance(value, int):
            value = self._causation = UUID(int=value)
        return value

    @property
    def ids(self) -> tuple[UUID | int, UUID | int | None, UUID | int | None]:
        """(event id, correlation id or None when it is the event id, causation id), compact."""
        return self._id, self._correlation, self._causation

    def __repr__(self) -> str:
        return f"Record(seq={self.seq}, type={self.type!r}, version={self.version}, event_id={self.event_id})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self.seq == other.seq and self.event_id == other.event_id

    def __hash__(self) -> int:
        return hash((self.seq, self.event_id))


def decode_events(records: Iterable[Record[Any]]) -> None:
    """Decode the event of each of ``records`` not decoded yet, as `Record.event` would.

    For a caller that decodes many records in a row (a replay's page): the
    validator is looked up once per run of records of one type and version,
    instead of a property and a registry call per record. A record whose
    data must be upcast first, or does not validate, is left undecoded:
    its `event` then decodes it, or raises `EventDecodeError` naming it. So
    is a record of a subclass (a store's `UnreadableRecord`, whose `event`
    raises).
    """
    name: str | None = None
    version = 0
    validate = None
    for record in records:
        if record.decoded is not None or type(record) is not Record:  # a subclass's `event` may differ
            continue
        if record.type != name or record.version != version:
            name, version = record.type, record.version
            validate = registry.validator(name, version)
        if validate is not None:
            try:
                record.decoded = validate(record._data)  # type: ignore[arg-type]  # undecoded: it has data
            except Exception:  # left for `event`, which raises it for this record alone
                continue


def _as_uuid_or_int(value: Any) -> UUID | int:
    if isinstance(value, (UUID, int)):
        return value
    if isinstance(value, bytes) and len(value) == 16:
        return UUID(bytes=value)
    if isinstance(value, str):
        return UUID(value)
    raise TypeError(f"cannot read an event id from {value!r}")
