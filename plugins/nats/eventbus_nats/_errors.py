"""The bridge's own errors, under eventbus's `EventBusError`."""

from __future__ import annotations

from eventbus import EventBusError

__all__ = ["BadMessage", "PayloadTooLarge"]


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
    """An inbound message lacks the metadata of an eventbus event (its event
    id, type or version header), or holds it in a form that does not parse.
    The message becomes a dead letter of the bridge's inbound side."""
