"""Uses `eventbus.testing.TestBus` the way a test suite would; checked by
``mypy --strict`` like ``api.py``. Nothing here runs in the test suite."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, assert_type

from eventbus import DeadLetter, Event, EventBus, Record
from eventbus.testing import RunDeadLetters, TestBus


class Paid(Event, name="typing.testbus.paid"):
    order_id: str


async def a_test() -> None:
    bus = EventBus()
    async with TestBus(bus, store="memory://", raise_errors=False) as tb:
        assert_type(tb, TestBus)
        assert_type(await tb.publish(Paid(order_id="A1"), headers={"source": "test"}), int)
        await tb.drain(timeout=5)
        assert_type(tb.published, list[Record])
        assert_type(tb.published_events(Paid), list[Paid])
        assert_type(tb.assert_published(Paid, order_id="A1"), Paid)
        assert_type(tb.dead_letters, RunDeadLetters)
        assert_type(await tb.dead_letters.list(), Sequence[DeadLetter])
        assert_type(await tb.expect(Paid, where=lambda paid: paid.order_id == "A1", timeout=1), Paid)
        assert_type(tb.assert_published(Paid, times=1, order_id="A1"), Paid)
        tb.assert_not_published(Paid, order_id="B2")
        assert_type(bus.stats().to_dict(), dict[str, Any])
        json.dumps(bus.stats()["x"].to_dict())
