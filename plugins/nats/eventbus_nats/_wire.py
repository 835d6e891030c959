"""An event as a NATS message and back: CloudEvents 1.0, binary content mode.

The body is the event's JSON exactly as the store keeps it (`Record.data`,
pydantic's serializer through `eventbus.event.encode`), and it is decoded on
the way in the way a store's rows are (`Record.from_stored`, then
``record.event``), so an event crosses the bridge in the one encoding every
store shares. The metadata travels in headers, as the CloudEvents NATS
protocol binding has it (attributes as ``ce-<name>``, ``datacontenttype`` as
``content-type``), so any CloudEvents consumer can read what a bridge sends,
and any CloudEvents producer can feed a bridge:

| header | value |
| --- | --- |
| ``Nats-Msg-Id`` | the event id (JetStream drops a second message with the same id within its duplicate window) |
| ``ce-specversion`` | ``1.0`` |
| ``ce-id`` | the event id |
| ``ce-source`` | the bridge's ``source`` (its service name unless set) |
| ``ce-type`` | the registered type name |
| ``ce-time`` | when the event was recorded (RFC 3339) |
| ``content-type`` | ``application/json`` |
| ``ce-correlationid`` | the correlation id, when it is not the event's own id |
| ``ce-causationid`` | the causation id, when there is one |
| ``ce-eventbusversion`` | the version the body was written with |
| ``ce-eventbusdepth`` | the causation depth, when above 0 |
| ``ce-eventbusheaders`` | the record's headers as a JSON object (ASCII), when there are any |

On the way in, header names are compared without regard to case, and a
message in the structured content mode (``content-type:
application/cloudevents+json``, the attributes and ``data`` in one JSON
object) is read as if its attributes were headers. ``ce-specversion``,
``ce-id``, ``ce-source`` and ``ce-type`` are required; ``ce-type`` must be
the type of the subject the message came on. A ``ce-id`` that is not a UUID
(other producers' ids are any string) becomes the event id
``uuid5(CE_ID_NAMESPACE, source + "\\n" + id)``, the same each time the
message comes, and is kept as the record's ``ce-id`` header. The version is
the type's current one when ``ce-eventbusversion`` is absent. The source
becomes the record's ``origin`` header. Other attributes (``ce-subject``,
a producer's own extensions) are kept as ``ce-<name>`` headers of the
record; ``ce-time`` is not (the local record has its own ``recorded_at``).

Each header is checked before it is used, so no value can make a message
that neither ingests nor becomes a dead letter: numbers are at most
`INT_HEADER_MAX` (their length is checked before ``int()``), ids are UUIDs,
``ce-eventbusheaders`` and what is kept hold only strings every store can
keep. A header that fails raises `BadHeader` naming it and quoting the start
of its value.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID, uuid5

from eventbus import Event, Record
from eventbus.bus import ORIGIN_HEADER
from eventbus.store.codec import storable_text

from ._errors import BadHeader

__all__ = [
    "CAUSATION_ID",
    "CE_ID_NAMESPACE",
    "CONTENT_TYPE",
    "CORRELATION_ID",
    "DEPTH",
    "HEADERS",
    "ID",
    "INT_HEADER_MAX",
    "MSG_ID",
    "NATS_STREAM_SEQ",
    "NATS_SUBJECT",
    "Outgoing",
    "SOURCE",
    "SPECVERSION",
    "STRUCTURED",
    "TIME",
    "TYPE",
    "VERSION",
    "event_id_of",
    "incoming",
    "letter_record",
    "outgoing",
]

MSG_ID = "Nats-Msg-Id"
SPECVERSION = "ce-specversion"
ID = "ce-id"
SOURCE = "ce-source"
TYPE = "ce-type"
TIME = "ce-time"
CONTENT_TYPE = "content-type"
CORRELATION_ID = "ce-correlationid"
CAUSATION_ID = "ce-causationid"
VERSION = "ce-eventbusversion"
DEPTH = "ce-eventbusdepth"
HEADERS = "ce-eventbusheaders"
STRUCTURED = "application/cloudevents+json"
"""The ``content-type`` of a message in the structured content mode."""
NATS_SUBJECT = "Nats-Subject"
"""Added to the headers of an inbound dead letter's record: the subject the message came on."""
NATS_STREAM_SEQ = "Nats-Stream-Seq"
"""Added to the headers of an inbound dead letter's record: the message's sequence number in the stream."""
INT_HEADER_MAX = 2**31 - 1
"""The largest version or causation depth a message may carry: what PostgreSQL's
``integer`` column holds, the narrowest column a store keeps them in."""
CE_ID_NAMESPACE = UUID("5d3f7a52-0c8e-4b8e-9a57-4c7e0e9b1f20")
"""The namespace of the event ids made from a ``ce-id`` that is not a UUID."""

SPEC_VERSION = "1.0"
JSON = "application/json"
_CE = "ce-"
_MAPPED = frozenset({SPECVERSION, ID, SOURCE, TYPE, TIME, CORRELATION_ID, CAUSATION_ID, VERSION, DEPTH, HEADERS})
"""The attributes that become the record's own fields (or are dropped: ``ce-time``), not its headers."""
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


def outgoing(record: Record, subject: str, source: str) -> Outgoing:
    """The message that carries ``record`` to ``subject``, from ``source``."""
    data = record.data
    # the record's compact ids (ints for what this process made) go to text
    # without a UUID made of each: outgoing() is on the bridge's per-event path
    event_id, correlation_id, causation_id = record.ids
    event_text = _uuid_text(event_id)
    headers = {
        MSG_ID: event_text,
        SPECVERSION: SPEC_VERSION,
        ID: event_text,
        SOURCE: source,
        TYPE: record.type,
        TIME: record.recorded_at.isoformat().replace("+00:00", "Z"),
        CONTENT_TYPE: JSON,
        VERSION: str(record.version),
    }
    if correlation_id is not None:
        correlation_text = _uuid_text(correlation_id)
        if correlation_text != event_text:
            headers[CORRELATION_ID] = correlation_text
    if causation_id is not None:
        headers[CAUSATION_ID] = _uuid_text(causation_id)
    if record.depth:
        headers[DEPTH] = str(record.depth)
    if record.headers:
        headers[HEADERS] = json.dumps(dict(record.headers), separators=(",", ":"))
    return Outgoing(subject, data if isinstance(data, bytes) else data.encode(), headers)


def _uuid_text(value: UUID | int) -> str:
    """``str(UUID(int=value))`` for an int, in a third of the time; ``str(value)`` for a `UUID`."""
    if isinstance(value, UUID):
        return str(value)
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def incoming(headers: Mapping[str, str], data: bytes, of: type[Event]) -> Record:
    """The record an inbound message of type ``of`` carries, its event still
    undecoded (reading ``record.event`` decodes it), with its ``ce-source``
    as its ``origin`` header; `BadHeader` naming the attribute that is
    missing, does not parse, is out of range or names another type."""
    attributes, data = _attributes(headers, data)
    _expect(attributes, SPECVERSION, SPEC_VERSION, "the CloudEvents version 1.0")
    _expect(attributes, TYPE, of.__event_type__, f"{of.__event_type__!r}, the type of the subject it came on")
    source = _text(attributes, SOURCE)
    event_id, kept = _event_id(attributes, source)
    kept.update(_headers(attributes))
    for name, value in attributes.items():
        if name.startswith(_CE) and name not in _MAPPED:
            kept[name] = _storable(name, value)
    kept[ORIGIN_HEADER] = source
    return Record.from_stored(
        seq=0,
        type=of.__event_type__,
        version=_int(attributes, VERSION, minimum=1, default=of.__event_version__),
        data=data,
        event_id=event_id,
        recorded_at=time.time_ns(),
        correlation_id=_uuid(attributes, CORRELATION_ID),
        causation_id=_uuid(attributes, CAUSATION_ID),
        headers=kept,
        depth=_int(attributes, DEPTH, minimum=0, default=0),
    )


def letter_record(subject: str, headers: Mapping[str, str], data: bytes, stream_seq: int) -> Record:
    """A record for the dead letter of a message that could not be ingested:
    what of its metadata parses, its NATS headers (plus `NATS_SUBJECT` and
    `NATS_STREAM_SEQ`) as the record's headers, its body as text; every
    string in a form any store can hold."""
    attributes = _lowered(headers)
    try:
        version = _int(attributes, VERSION, minimum=1, default=0)
    except BadHeader:
        version = 0
    event_id = event_id_of(headers)
    kept = {**headers, NATS_SUBJECT: subject, NATS_STREAM_SEQ: str(stream_seq)}
    return Record.from_stored(
        seq=0,
        type=storable_text(attributes.get(TYPE) or _UNKNOWN_TYPE),
        version=version,
        data=storable_text(data.decode("utf-8", "backslashreplace")),
        event_id=_NO_ID if event_id is None else event_id,
        recorded_at=time.time_ns(),
        headers={storable_text(name): storable_text(value) for name, value in kept.items()},
    )


def event_id_of(headers: Mapping[str, str]) -> UUID | None:
    """The event id a message's headers carry (binary mode), or None if they carry none that parses."""
    attributes = _lowered(headers)
    try:
        return _event_id(attributes, attributes.get(SOURCE) or "")[0]
    except BadHeader:
        return None


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _attributes(headers: Mapping[str, str], data: bytes) -> tuple[dict[str, str], bytes]:
    """The attributes as lower-case header names, and the event's JSON; a
    structured message's envelope is unpacked into both."""
    attributes = _lowered(headers)
    content_type = attributes.get(CONTENT_TYPE)
    media = None if content_type is None else content_type.partition(";")[0].strip().lower()
    if media == STRUCTURED:
        return _structured(data)
    if media is not None and media != JSON and not media.endswith("+json"):
        raise BadHeader(CONTENT_TYPE, content_type, f"{JSON!r} (or {STRUCTURED!r} in the structured mode)")
    return attributes, data


def _structured(data: bytes) -> tuple[dict[str, str], bytes]:
    expected = "a JSON object of CloudEvents attributes (the structured mode)"
    try:
        envelope = json.loads(data)
    except (ValueError, RecursionError):
        raise BadHeader(CONTENT_TYPE, STRUCTURED, f"{expected}; the body is not JSON") from None
    if not isinstance(envelope, dict):
        raise BadHeader(CONTENT_TYPE, STRUCTURED, f"{expected}; the body is no object")
    attributes: dict[str, str] = {}
    for name, value in envelope.items():
        if name in ("data", "data_base64"):
            continue
        key = CONTENT_TYPE if name == "datacontenttype" else _CE + name.lower()
        attributes[key] = value if isinstance(value, str) else json.dumps(value)
    if "data_base64" in envelope:
        try:
            return attributes, base64.b64decode(str(envelope["data_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise BadHeader("data_base64", str(envelope["data_base64"]), "base64") from None
    body = json.dumps(envelope.get("data"), separators=(",", ":"), ensure_ascii=False).encode()
    media = attributes.get(CONTENT_TYPE, JSON).partition(";")[0].strip().lower()
    if media != JSON and not media.endswith("+json"):
        raise BadHeader("datacontenttype", attributes[CONTENT_TYPE], repr(JSON))
    return attributes, body


def _expect(attributes: Mapping[str, str], name: str, value: str, expected: str) -> None:
    found = attributes.get(name)
    if found != value:
        raise BadHeader(name, found, expected)


def _text(attributes: Mapping[str, str], name: str) -> str:
    value = attributes.get(name)
    if not value:
        raise BadHeader(name, value, "a non-empty string (a CloudEvents required attribute)")
    return _storable(name, value)


def _storable(name: str, value: str) -> str:
    if storable_text(value) != value:
        raise BadHeader(name, value, "text that every store can hold (no NUL, no lone surrogates)")
    return value


def _event_id(attributes: Mapping[str, str], source: str) -> tuple[UUID, dict[str, str]]:
    """The event id ``ce-id`` gives, and the headers that keep an id that was no UUID."""
    value = _text(attributes, ID)
    if len(value) <= _UUID_CHARS:
        try:
            return UUID(value), {}
        except ValueError:
            pass
    return uuid5(CE_ID_NAMESPACE, f"{source}\n{value}"), {ID: value}


def _uuid(attributes: Mapping[str, str], name: str) -> UUID | None:
    value = attributes.get(name)
    if value is None:
        return None
    if len(value) > _UUID_CHARS:
        raise BadHeader(name, value, "a UUID")
    try:
        return UUID(value)
    except ValueError:
        raise BadHeader(name, value, "a UUID") from None


def _int(attributes: Mapping[str, str], name: str, *, minimum: int, default: int | None = None) -> int:
    value = attributes.get(name)
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


def _headers(attributes: Mapping[str, str]) -> dict[str, str]:
    value = attributes.get(HEADERS)
    if value is None:
        return {}
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
