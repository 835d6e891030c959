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
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from eventbus import Record
from eventbus.store.codec import storable_text

from ._errors import BadMessage

__all__ = [
    "CAUSATION_ID",
    "CORRELATION_ID",
    "DEPTH",
    "EVENT_ID",
    "HEADERS",
    "Incoming",
    "NATS_SUBJECT",
    "ORIGIN",
    "Outgoing",
    "TYPE",
    "VERSION",
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
    (reading ``record.event`` decodes it); `BadMessage` naming the header
    that is missing or does not parse."""
    return Incoming(
        Record.from_stored(
            seq=0,
            type=_required(headers, TYPE),
            version=_int(headers, VERSION, minimum=1),
            data=data,
            event_id=_event_id(headers),
            recorded_at=time.time_ns(),
            correlation_id=_uuid(headers, CORRELATION_ID),
            causation_id=_uuid(headers, CAUSATION_ID),
            headers=_headers(headers),
            depth=_int(headers, DEPTH, minimum=0, default=0),
        ),
        headers.get(ORIGIN) or None,
    )


def letter_record(subject: str, headers: Mapping[str, str], data: bytes) -> Record:
    """A record for the dead letter of a message that could not be ingested:
    what of its metadata parses, its NATS headers (plus `NATS_SUBJECT`) as
    the record's headers, its body as text a store can hold."""
    try:
        event_id = _event_id(headers)
    except BadMessage:
        event_id = _NO_ID
    try:
        version = _int(headers, VERSION, minimum=1, default=0)
    except BadMessage:
        version = 0
    return Record.from_stored(
        seq=0,
        type=headers.get(TYPE) or _UNKNOWN_TYPE,
        version=version,
        data=storable_text(data.decode("utf-8", "backslashreplace")),
        event_id=event_id,
        recorded_at=time.time_ns(),
        headers={**headers, NATS_SUBJECT: subject},
    )


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise BadMessage(f"the message has no {name} header: it was not published by an eventbus bridge")
    return value


def _event_id(headers: Mapping[str, str]) -> UUID:
    return _parse_uuid(EVENT_ID, _required(headers, EVENT_ID))


def _uuid(headers: Mapping[str, str], name: str) -> UUID | None:
    value = headers.get(name)
    return None if value is None else _parse_uuid(name, value)


def _parse_uuid(name: str, value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise BadMessage(f"the message's {name} header is {value!r}, not a UUID") from None


def _int(headers: Mapping[str, str], name: str, *, minimum: int, default: int | None = None) -> int:
    if default is not None and headers.get(name) is None:
        return default
    value = _required(headers, name)
    if not value.isascii() or not value.isdigit() or int(value) < minimum:
        raise BadMessage(f"the message's {name} header is {value!r}, not an integer >= {minimum}")
    return int(value)


def _headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    value = headers.get(HEADERS)
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise BadMessage(f"the message's {HEADERS} header is {value!r}, not a JSON object of strings")
    return parsed
