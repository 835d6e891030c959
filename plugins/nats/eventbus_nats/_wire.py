"""An event as a NATS message and back.

The body is the event's JSON exactly as the store keeps it (`Record.data`,
pydantic's serializer through `eventbus.event.encode`), and it is decoded on
the way in the way a store's rows are (`Record.from_stored`, then
``record.event``), so an event crosses the bridge in the one encoding every
store shares. The metadata travels in headers:

| header | value |
| --- | --- |
| ``Nats-Msg-Id`` | the event id (JetStream drops a second message with the same id within its duplicate window) |
| ``Eventbus-Type`` | the registered type name |
| ``Eventbus-Version`` | the version the body was written with |
| ``Eventbus-Correlation-Id`` | the correlation id |
| ``Eventbus-Causation-Id`` | the causation id, when there is one |
| ``Eventbus-Depth`` | the causation depth, when above 0 |
| ``Eventbus-Headers`` | the record's headers as a JSON object (ASCII), when there are any |
| ``Eventbus-Origin`` | the ``service`` of the bridge that published it |

On the way in each header is checked before it is used, so no value can
make a message that neither ingests nor becomes a dead letter: numbers are
at most `INT_HEADER_MAX` (their length is checked before ``int()``), ids
are UUIDs, ``Eventbus-Headers`` holds only strings every store can keep, the
origin is a service name. A header that fails raises `BadHeader` naming it
and quoting the start of its value.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from eventbus import Record
from eventbus.store.codec import storable_text

from ._errors import BadHeader
from ._subjects import is_name

__all__ = [
    "CAUSATION_ID",
    "CORRELATION_ID",
    "DEPTH",
    "EVENT_ID",
    "HEADERS",
    "INT_HEADER_MAX",
    "Incoming",
    "NATS_STREAM_SEQ",
    "NATS_SUBJECT",
    "ORIGIN",
    "Outgoing",
    "TYPE",
    "VERSION",
    "event_id_of",
    "incoming",
    "letter_record",
    "outgoing",
]

EVENT_ID = "Nats-Msg-Id"
TYPE = "Eventbus-Type"
VERSION = "Eventbus-Version"
CORRELATION_ID = "Eventbus-Correlation-Id"
CAUSATION_ID = "Eventbus-Causation-Id"
DEPTH = "Eventbus-Depth"
HEADERS = "Eventbus-Headers"
ORIGIN = "Eventbus-Origin"
NATS_SUBJECT = "Nats-Subject"
"""Added to the headers of an inbound dead letter's record: the subject the message came on."""
NATS_STREAM_SEQ = "Nats-Stream-Seq"
"""Added to the headers of an inbound dead letter's record: the message's sequence number in the stream."""
INT_HEADER_MAX = 2**31 - 1
"""The largest version or causation depth a message may carry: what PostgreSQL's
``integer`` column holds, the narrowest column a store keeps them in."""

_INT_DIGITS = len(str(INT_HEADER_MAX))
_UUID_CHARS = len("urn:uuid:") + 36  # the longest form UUID() takes

_NO_ID = UUID(int=0)
_UNKNOWN_TYPE = "<unknown>"


@dataclass(frozen=True)
class Outgoing:
    """A message ready for ``js.publish``."""

    subject: str
    payload: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Incoming:
    """An inbound message read back: the record to ingest and the service it came from."""

    record: Record
    origin: str | None


def outgoing(record: Record, subject: str, service: str) -> Outgoing:
    """The message that carries ``record`` to ``subject``."""
    data = record.data
    headers = {
        EVENT_ID: str(record.event_id),
        TYPE: record.type,
        VERSION: str(record.version),
        CORRELATION_ID: str(record.correlation_id),
        ORIGIN: service,
    }
    if record.causation_id is not None:
        headers[CAUSATION_ID] = str(record.causation_id)
    if record.depth:
        headers[DEPTH] = str(record.depth)
    if record.headers:
        headers[HEADERS] = json.dumps(dict(record.headers), separators=(",", ":"))
    return Outgoing(subject, data if isinstance(data, bytes) else data.encode(), headers)


def incoming(headers: Mapping[str, str], data: bytes) -> Incoming:
    """The record an inbound message carries, its event still undecoded
    (reading ``record.event`` decodes it); `BadHeader` naming the header
    that is missing, does not parse or is out of range."""
    return Incoming(
        Record.from_stored(
            seq=0,
            type=_type(headers),
            version=_int(headers, VERSION, minimum=1),
            data=data,
            event_id=_event_id(headers),
            recorded_at=time.time_ns(),
            correlation_id=_uuid(headers, CORRELATION_ID),
            causation_id=_uuid(headers, CAUSATION_ID),
            headers=_headers(headers),
            depth=_int(headers, DEPTH, minimum=0, default=0),
        ),
        _origin(headers),
    )


def letter_record(subject: str, headers: Mapping[str, str], data: bytes, stream_seq: int) -> Record:
    """A record for the dead letter of a message that could not be ingested:
    what of its metadata parses, its NATS headers (plus `NATS_SUBJECT` and
    `NATS_STREAM_SEQ`) as the record's headers, its body as text; every
    string in a form any store can hold."""
    try:
        version = _int(headers, VERSION, minimum=1, default=0)
    except BadHeader:
        version = 0
    event_id = event_id_of(headers)
    kept = {**headers, NATS_SUBJECT: subject, NATS_STREAM_SEQ: str(stream_seq)}
    return Record.from_stored(
        seq=0,
        type=storable_text(headers.get(TYPE) or _UNKNOWN_TYPE),
        version=version,
        data=storable_text(data.decode("utf-8", "backslashreplace")),
        event_id=_NO_ID if event_id is None else event_id,
        recorded_at=time.time_ns(),
        headers={storable_text(name): storable_text(value) for name, value in kept.items()},
    )


def event_id_of(headers: Mapping[str, str]) -> UUID | None:
    """The event id a message's headers carry, or None if they carry none that parses."""
    try:
        return _event_id(headers)
    except BadHeader:
        return None


def _type(headers: Mapping[str, str]) -> str:
    value = headers.get(TYPE)
    if not value:
        raise BadHeader(TYPE, value, "the event's type name (the message was not sent by an eventbus bridge)")
    return value


def _event_id(headers: Mapping[str, str]) -> UUID:
    value = headers.get(EVENT_ID)
    if value is None:
        raise BadHeader(EVENT_ID, None, "the event id, a UUID (the message was not sent by an eventbus bridge)")
    return _parse_uuid(EVENT_ID, value)


def _uuid(headers: Mapping[str, str], name: str) -> UUID | None:
    value = headers.get(name)
    return None if value is None else _parse_uuid(name, value)


def _parse_uuid(name: str, value: str) -> UUID:
    if len(value) > _UUID_CHARS:
        raise BadHeader(name, value, "a UUID")
    try:
        return UUID(value)
    except ValueError:
        raise BadHeader(name, value, "a UUID") from None


def _int(headers: Mapping[str, str], name: str, *, minimum: int, default: int | None = None) -> int:
    value = headers.get(name)
    if value is None and default is not None:
        return default
    expected = f"an integer from {minimum} to {INT_HEADER_MAX}"
    # the length first: int() of thousands of digits is slow, or refused
    if value is None or not (0 < len(value) <= _INT_DIGITS and value.isascii() and value.isdigit()):
        raise BadHeader(name, value, expected)
    number = int(value)
    if not minimum <= number <= INT_HEADER_MAX:
        raise BadHeader(name, value, expected)
    return number


def _headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    value = headers.get(HEADERS)
    if value is None:
        return None
    expected = "a JSON object of strings that every store can hold (no NUL, no lone surrogates)"
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise BadHeader(HEADERS, value, expected) from None
    if not isinstance(parsed, dict) or not all(
        isinstance(item, str) and storable_text(item) == item for pair in parsed.items() for item in pair
    ):
        raise BadHeader(HEADERS, value, expected)
    return parsed


def _origin(headers: Mapping[str, str]) -> str | None:
    value = headers.get(ORIGIN)
    if not value:
        return None
    if not is_name(value):
        raise BadHeader(ORIGIN, value, "a service name: ASCII letters, digits, '-' and '_'")
    return value
