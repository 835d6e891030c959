"""A small application for the CLI tests: its events and its bus factory.

``eventbus dlq redrive --app cli_app:create_bus`` imports it in a child
process, as a real deployment would import the service's own module.
"""

from __future__ import annotations

from typing import Any

from eventbus import Event, EventBus, Record, Retry


class CliOrder(Event, name="cli.order", version=1):
    order_id: str
    amount: float


class CliNote(Event, name="cli.note", version=1):
    text: str


AUDIT = "cli-audit"


def create_bus(url: str, *, broken: bool = False) -> EventBus:
    """The application's bus; with ``broken`` its audit handler fails on big orders."""
    bus = EventBus(store=url)

    @bus.subscribe(CliOrder, name=AUDIT, durable=True, retry=Retry(attempts=2, backoff=0.0, jitter=0.0))
    def audit(event: CliOrder, record: Record) -> None:
        if broken and event.amount > 100:
            raise ValueError(f"cannot audit order {event.order_id}")

    return bus


class CliRefund(Event, name="cli.refund", version=2):
    """Money going back to a customer (version 2 added the reason)."""

    order_id: str
    reason: str


@CliRefund.upcaster(from_version=1)
def refund_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 refunds had no reason."""
    return {**data, "reason": "unknown"}


async def create_bus_async(url: str) -> EventBus:
    """A mistake the CLI names: ``--app`` wants a plain function."""
    return EventBus(store=url)


def create_bus_later(url: str) -> Any:
    """A mistake the CLI names: returns a coroutine, not a bus."""
    return create_bus_async(url)


def create_two_buses(url: str, other_url: str) -> EventBus:
    """A mistake the CLI names: takes two arguments."""
    return EventBus(store=url)


BUS = EventBus()
"""A bus instance: what ``catalog`` accepts and ``dlq redrive`` does not."""
