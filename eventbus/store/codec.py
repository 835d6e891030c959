"""The one conversion between `Record` / `DeadLetter` and what a store keeps.

Every durable store (SQLite, PostgreSQL, a third party's) writes and reads
the same fields, in the same order (`RECORD_FIELDS`, `DEAD_LETTER_FIELDS`),
in the same primitive forms:

- ids: 128-bit UUIDs; a store picks the column form through its `Layout`
  (16 big-endian bytes for SQLite, ``uuid`` for PostgreSQL);
- ``recorded_at``: integer nanoseconds since the epoch (what `Record` keeps);
- ``headers``: a JSON object as text, NULL when there are none;
- ``depth``: the causation depth, so ``max_causation_depth`` holds across
  processes and restarts;
- ``data``: the event's JSON as pydantic wrote it, never re-parsed on the way
  in or out (events decode lazily, when `Record.event` is first read);
- dead letters' failure times: as the `Layout` says (ns or ``timestamptz``);
  their error text escaped where a store cannot hold it (`storable_text`).

Reading is per row: a row that cannot be turned back into a `Record` (bad
JSON headers, a text id or version, ...) becomes an `UnreadableRecord` whose
``event`` raises `EventDecodeError` naming its seq, so one bad row never
fails the page around it and replay goes on after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol
from uuid import UUID

from ..deadletters.letter import DeadLetter
from ..event import Event
from ..exceptions import EventDecodeError
from ..record import NO_HEADERS, Record

__all__ = [
    "DEAD_LETTER_FIELDS",
    "EXTRA_FIELDS",
    "LETTER_FIELDS",
    "Layout",
    "MAX_SEQ",
    "PLAIN_FIELDS",
    "RECORD_FIELDS",
    "Row",
    "UnreadableRecord",
    "datetime_of",
    "id_bytes",
    "id_uuid",
    "letter_values",
    "letters_from_rows",
    "ns_of",
    "record_from_row",
    "record_values",
    "records_from_rows",
    "records_from_split_rows",
    "records_from_typed_rows",
    "storable_text",
]

MAX_SEQ = 2**63 - 1
"""The largest seq a store holds (a signed 64-bit integer): the upper bound of a read without ``to_seq``."""

RECORD_FIELDS: tuple[str, ...] = (
    "seq",
    "type",
    "version",
    "data",
    "event_id",
    "recorded_at",
    "correlation_id",
    "causation_id",
    "headers",
    "depth",
)
"""A stored record's fields, in the order `record_values` writes (from ``type`` on) and
`records_from_rows` reads them. ``correlation_id`` is NULL when it is the event's own id."""

PLAIN_FIELDS: tuple[str, ...] = RECORD_FIELDS[1:6]
"""The fields `records_from_split_rows` reads from every row beside its seq: ``type`` to ``recorded_at``."""

EXTRA_FIELDS: tuple[str, ...] = RECORD_FIELDS[6:]
"""The fields that are NULL (``depth`` 0) for an event published outside a handler
without headers, which most events are: `records_from_split_rows` takes them apart."""

LETTER_FIELDS: tuple[str, ...] = (
    "id",
    "subscription",
    "error_type",
    "error_message",
    "traceback",
    "attempts",
    "first_failed_at",
    "last_failed_at",
)
"""A dead letter's own fields; the record it carries follows them."""

DEAD_LETTER_FIELDS: tuple[str, ...] = LETTER_FIELDS + RECORD_FIELDS
"""A stored dead letter's fields, in the order `letter_values` writes and `letters_from_rows` reads them."""


class Row(Protocol):
    """A stored row as a driver returns it: a tuple (sqlite3), an ``asyncpg.Record``, ..."""

    def __getitem__(self, index: Any, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NS_PER_MICROSECOND = 1_000
_ID_BYTES = 16
_UNREADABLE_TYPE = "<unreadable>"
_NO_EXTRAS = (None, None, None, 0)


def id_bytes(value: UUID | int) -> bytes:
    """An id as 16 big-endian bytes (SQLite's ``BLOB`` form)."""
    return value.to_bytes(_ID_BYTES) if isinstance(value, int) else value.bytes


def id_uuid(value: UUID | int) -> str:
    """An id as a database driver's ``uuid`` parameter: its 32 hex digits.

    Text, not a `UUID` object (the standard library's or a driver's): both are
    tracked by the garbage collector, and the ids of an appended batch live
    through the append's round trip, so under concurrent publishers each was
    promoted into the oldest generation and brought the next full collection
    nearer. PostgreSQL ``publish_many`` from four publishers (200 000 events,
    1 000 per batch, the events built beforehand and kept) ran five full
    collections with asyncpg's `UUID` and one with text: 4.6 µs of the
    process's CPU per event instead of 6.1. asyncpg parses the text in C.
    """
    return f"{value:032x}" if isinstance(value, int) else value.hex


def _identity(value: Any) -> Any:
    return value


def ns_of(moment: datetime) -> int:
    """Exact integer nanoseconds since the epoch of an aware datetime (no float rounding)."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment!r} is a naive datetime; stores keep aware UTC datetimes")
    return (moment - _EPOCH) // _MICROSECOND * _NS_PER_MICROSECOND


def datetime_of(ns: int) -> datetime:
    """The aware UTC datetime of integer nanoseconds since the epoch (to the microsecond)."""
    return _EPOCH + timedelta(microseconds=ns // _NS_PER_MICROSECOND)


@dataclass(frozen=True)
class Layout:
    """The column forms a store chose where the codec leaves it a choice.

    Attributes:
        id: turns an id (`UUID` or its int) into the column value (`id_bytes`, `id_uuid`).
        failed_at: turns a dead letter's failure time into the column value
            (`ns_of` for an integer column; the default keeps the datetime).
        text_data: hand the event's JSON over as `str` (a driver that
            will not take UTF-8 bytes for a text column) rather than as
            whatever the record holds.
    """

    id: Callable[[UUID | int], Any] = id_bytes
    failed_at: Callable[[datetime], Any] = _identity
    text_data: bool = False


def storable_text(text: str) -> str:
    """``text`` with what no store column can hold escaped: lone surrogates
    (``os.fsdecode`` of a non-UTF-8 file name) as ``\\udcff`` and NUL as ``\\x00``."""
    if text.isascii() and "\x00" not in text:
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def record_values(record: Record, layout: Layout) -> tuple[Any, ...]:
    """What a store writes for ``record``: `RECORD_FIELDS` without ``seq`` (the store assigns it).

    Raises `ValueError` naming the record when its event cannot be stored
    (it does not encode as JSON, or holds a non-finite float).
    """
    try:
        data = record.data
        if layout.text_data and isinstance(data, bytes):
            data = data.decode()
        event_id, correlation_id, causation_id = record.ids
        headers = record.headers
        to_id = layout.id
        return (
            record.type,
            record.version,
            data,
            to_id(event_id),
            record.recorded_at_ns,
            None if correlation_id is None else to_id(correlation_id),
            None if causation_id is None else to_id(causation_id),
            _headers_json(headers) if headers else None,
            record.depth,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot store event {record.event_id} of type {record.type!r}: {exc}") from exc


def letter_values(letter: DeadLetter, layout: Layout) -> tuple[Any, ...]:
    """What a store writes for ``letter``, in `DEAD_LETTER_FIELDS` order.

    Error messages and tracebacks go through `storable_text`. Raises
    `ValueError` naming the letter when it cannot be stored.
    """
    try:
        return (
            layout.id(letter.id),
            letter.subscription,
            letter.error_type,
            storable_text(letter.error_message),
            storable_text(letter.traceback),
            letter.attempts,
            layout.failed_at(letter.first_failed_at),
            layout.failed_at(letter.last_failed_at),
            letter.record.seq,
            *record_values(letter.record, layout),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot store the dead letter {letter.id} of {letter.subscription!r}: {exc}") from exc


def records_from_rows(rows: Iterable[Row]) -> list[Record]:
    """Records from rows in `RECORD_FIELDS` order, events still undecoded.

    A row that cannot be read becomes an `UnreadableRecord` (see
    `record_from_row`); the rows around it are unaffected.
    """
    new = Record
    to_int = int.from_bytes
    is_uuid = _is_uuid
    # The common row (16-byte or UUID ids, no causation, no headers, every type
    # right) is built inline, a comprehension being the cheapest loop; anything
    # else goes through record_from_row, which checks each column.
    return [
        new(
            seq,
            None,
            type_,
            version,
            to_int(event_id) if type(event_id) is bytes else event_id,
            recorded_at,
            None,
            None,
            NO_HEADERS,
            depth,
            data,
        )
        if correlation_id is None
        and causation_id is None
        and headers is None
        and type(version) is int
        and type(recorded_at) is int
        and type(depth) is int
        and type(type_) is str
        and type(data) is str
        and ((type(event_id) is bytes and len(event_id) == _ID_BYTES) or is_uuid(event_id))
        else record_from_row(
            (seq, type_, version, data, event_id, recorded_at, correlation_id, causation_id, headers, depth)
        )
        for seq, type_, version, data, event_id, recorded_at, correlation_id, causation_id, headers, depth in rows
    ]


def records_from_typed_rows(rows: Iterable[Row]) -> list[Record]:
    """Records from rows in `RECORD_FIELDS` order, events still undecoded, for
    a driver that hands each column back as the type its schema declares,
    and the ids as their 16 bytes.

    PostgreSQL's columns are typed and NOT NULL where `RECORD_FIELDS` says so,
    and asyncpg returns them as ints and text, and a ``uuid_send`` of an id
    column as 16 bytes: the checks of `records_from_rows` cannot fail there
    and only cost (140 ns a row of 430, a third of what a page read added to
    the driver's own fetch). The headers are JSON the schema does not check:
    a row that holds any goes through `record_from_row`, and becomes an
    `UnreadableRecord` when they are not an object of strings.
    """
    new = Record
    to_int = int.from_bytes
    return [
        new(
            seq,
            None,
            type_,
            version,
            to_int(event_id),
            recorded_at,
            None if correlation_id is None else to_int(correlation_id),
            None if causation_id is None else to_int(causation_id),
            NO_HEADERS,
            depth,
            data,
        )
        if headers is None
        else record_from_row(
            (seq, type_, version, data, event_id, recorded_at, correlation_id, causation_id, headers, depth)
        )
        for seq, type_, version, data, event_id, recorded_at, correlation_id, causation_id, headers, depth in rows
    ]


def records_from_split_rows(numbered: Iterable[tuple[int, Row]], extras: Mapping[Any, Row]) -> list[Record]:
    """Records from ``(seq, row)`` pairs, each row of `PLAIN_FIELDS`, events
    still undecoded; ``extras`` maps the seq of each row that has any of
    `EXTRA_FIELDS` to their values.

    For a store that reads the extra fields apart, from the few rows that hold
    them: each column a driver fetches costs, and most rows hold none of them.
    The seqs come apart from the rows for the same reason: a store that knows
    a page's seqs are consecutive need not fetch them.
    Ids are expected as 16 bytes; a row with another (a `UUID`, text) is read
    by `record_from_row`, and one that cannot be read becomes an
    `UnreadableRecord`, as in `records_from_rows`.
    """
    new = Record
    to_int = int.from_bytes
    return [
        new(
            seq,
            None,
            type_,
            version,
            to_int(event_id),
            recorded_at,
            None,
            None,
            NO_HEADERS,
            0,
            data,
        )
        if seq not in extras
        and type(version) is int
        and type(recorded_at) is int
        and type(type_) is str
        and type(data) is str
        and type(event_id) is bytes
        and len(event_id) == _ID_BYTES
        else record_from_row((seq, type_, version, data, event_id, recorded_at, *extras.get(seq, _NO_EXTRAS)))
        for seq, (type_, version, data, event_id, recorded_at) in numbered
    ]


def record_from_row(row: Row, offset: int = 0) -> Record:
    """The `Record` of a row whose `RECORD_FIELDS` start at ``offset``; decoded lazily.

    Ids may come as 16 bytes, `UUID`, int or text, ``recorded_at`` as integer
    nanoseconds, ``headers`` as JSON text or a mapping. A row that does not
    fit becomes an `UnreadableRecord` naming its seq and what was wrong.
    """
    seq, type_, version, data, event_id, recorded_at, correlation_id, causation_id, headers, depth = row[
        offset : offset + len(RECORD_FIELDS)
    ]
    try:
        return Record(
            _int_field("seq", seq),
            None,
            _str_field("type", type_),
            _int_field("version", version),
            _id_of("event_id", event_id),
            _int_field("recorded_at", recorded_at),
            None if correlation_id is None else _id_of("correlation_id", correlation_id),
            None if causation_id is None else _id_of("causation_id", causation_id),
            _headers_of(headers),
            0 if depth is None else _int_field("depth", depth),
            _data_field(data),
        )
    except _BadField as exc:
        return UnreadableRecord.of_row(seq, type_, version, data, event_id, recorded_at, str(exc))


def letters_from_rows(rows: Iterable[Row]) -> list[DeadLetter]:
    """Dead letters from rows in `DEAD_LETTER_FIELDS` order; failure times as ns or datetimes."""
    offset = len(LETTER_FIELDS)
    return [
        DeadLetter(
            id=UUID(int=_id_int(row[0])),
            subscription=row[1],
            error_type=row[2],
            error_message=row[3],
            traceback=row[4],
            attempts=row[5],
            first_failed_at=_failed_at(row[6]),
            last_failed_at=_failed_at(row[7]),
            record=record_from_row(row, offset),
        )
        for row in rows
    ]


class UnreadableRecord(Record):
    """A stored row that cannot be turned back into a `Record` (a corrupted
    column, a row written by hand). It keeps its seq and what could be read;
    reading its ``event`` raises `EventDecodeError` naming the seq and the
    column, so replay, catch-up and ``eventbus export`` report it and go on."""

    __slots__ = ("problem",)

    problem: str
    """What is wrong with the row, e.g. ``"headers: not a JSON object"``."""

    @classmethod
    def of_row(
        cls, seq: Any, type_: Any, version: Any, data: Any, event_id: Any, recorded_at: Any, problem: str
    ) -> UnreadableRecord:
        """The record of a bad row, with what of it can be read."""
        record = cls(
            seq if type(seq) is int else 0,
            None,
            type_ if isinstance(type_, str) else _UNREADABLE_TYPE,
            version if type(version) is int else 0,
            _id_or_nil(event_id),
            recorded_at if type(recorded_at) is int else 0,
            None,
            None,
            NO_HEADERS,
            0,
            data if isinstance(data, (str, bytes)) else "",
        )
        record.problem = problem
        return record

    def error(self) -> EventDecodeError:
        """The `EventDecodeError` reading this record raises."""
        type_name = None if self.type == _UNREADABLE_TYPE else self.type
        return EventDecodeError(
            f"stored record seq {self.seq} cannot be read: {self.problem}", seq=self.seq, type=type_name
        )

    @property
    def event(self) -> Event:
        """Always raises `EventDecodeError` naming the seq and what is wrong."""
        raise self.error()


class _BadField(Exception):
    """A column of a stored row has a value its field cannot take."""


def _int_field(name: str, value: Any) -> int:
    if type(value) is not int:
        raise _BadField(f"{name} is {value!r}, not an integer")
    return value


def _str_field(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _BadField(f"{name} is {value!r}, not text")
    return value


def _data_field(value: Any) -> str | bytes:
    if not isinstance(value, (str, bytes)):
        raise _BadField(f"data is {type(value).__name__}, not JSON text")
    return value


def _id_of(name: str, value: Any) -> UUID | int:
    if isinstance(value, UUID):
        return value
    try:
        return _id_int(value)
    except (TypeError, ValueError):
        raise _BadField(f"{name} is {value!r}, not a UUID") from None


def _id_int(value: Any) -> int:
    if isinstance(value, UUID):
        return value.int
    if type(value) is bytes and len(value) == _ID_BYTES:
        return int.from_bytes(value)
    if type(value) is int and 0 <= value < 1 << 128:
        return value
    if isinstance(value, str):
        return UUID(value).int
    raise TypeError(f"not a UUID: {value!r}")


def _is_uuid(value: Any) -> bool:
    return isinstance(value, UUID)


def _id_or_nil(value: Any) -> UUID | int:
    try:
        return _id_int(value)
    except (TypeError, ValueError):
        return 0


def _headers_json(headers: Mapping[str, str]) -> str:
    return json.dumps(dict(headers), ensure_ascii=False, separators=(",", ":"))


def _headers_of(value: Any) -> Mapping[str, str]:
    if value is None:
        return NO_HEADERS
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise _BadField(f"headers are not JSON ({exc})") from None
    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise _BadField(f"headers are {value!r}, not a JSON object of strings")
    return MappingProxyType(dict(value)) if value else NO_HEADERS


def _failed_at(value: int | datetime) -> datetime:
    return datetime_of(value) if isinstance(value, int) else value
