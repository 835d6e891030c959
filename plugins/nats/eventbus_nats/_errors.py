"""The bridge's own errors, under eventbus's `EventBusError`::

EventBusError
├── PayloadTooLarge     an event's JSON over max_payload (either way)
└── BadMessage          an inbound message that is not an eventbus event
    └── BadHeader       ... because one of its headers (CloudEvents attributes) is missing, malformed or out of range
"""

from __future__ import annotations

from eventbus import EventBusError

__all__ = ["BadHeader", "BadMessage", "PayloadTooLarge"]

_SHOWN = 64  # characters of a bad header value an error message quotes


class PayloadTooLarge(EventBusError):
    """An event's JSON is bigger than the bridge's ``max_payload``.

    Outbound, the event is not published: it becomes a dead letter of the
    forwarding subscription. Inbound, the message is not ingested: it
    becomes a dead letter of the bridge's inbound side and is acknowledged.

    Attributes:
        size: the payload's size in bytes.
        limit: the ``max_payload`` it exceeds.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class BadMessage(EventBusError):
    """An inbound message that is not a CloudEvent of a type the service takes in.
    The message becomes a dead letter of the bridge's inbound side (see
    `BadHeader` for what is wrong with it)."""


class BadHeader(BadMessage):
    """One of an inbound message's headers is missing (a CloudEvents required
    attribute: ``ce-specversion``, ``ce-id``, ``ce-source``, ``ce-type``),
    does not parse, holds a number out of range, or names another type than
    the subject's. The message is never retried: it becomes a dead letter of
    the bridge's inbound side.

    Attributes:
        header: the header's name (``ce-type``, ``ce-eventbusversion``, ...).
        value: its value, cut to its first 64 characters; None when it is missing.
    """

    def __init__(self, header: str, value: str | None, expected: str) -> None:
        shown = None if value is None else value[:_SHOWN]
        if value is None:
            described = f"the message has no {header} header"
        elif len(value) > _SHOWN:
            described = f"the message's {header} header is {shown!r}... ({len(value)} characters)"
        else:
            described = f"the message's {header} header is {shown!r}"
        super().__init__(f"{described}; expected {expected}")
        self.header = header
        self.value = shown
