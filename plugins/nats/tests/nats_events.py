"""The events of the NATS bridge's tests, shared with their child processes."""

from __future__ import annotations

from eventbus import Event


class OrderPlaced(Event, name="test.nats.order placed"):  # the space exercises the subject mapping
    order_id: str


class PaymentCaptured(Event, name="test.nats.payment_captured"):
    order_id: str


class Note(Event, name="test.nats.note"):
    text: str
