"""``max_causation_depth`` holds across a store: the depth is stored with each
record, so a loop whose every hop goes through the file (two buses sharing
it, as two processes would) is stopped at the limit instead of running on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from eventbus_sqlite import SqliteStore

from eventbus import CausationLoopError, Event, EventBus

_LIMIT = 5
_WAIT = 20


class Served(Event, name="eventbus_sqlite.tests.causation.Served"):
    hop: int


class Returned(Event, name="eventbus_sqlite.tests.causation.Returned"):
    hop: int


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"from_seq": 1}, id="from_seq"),
        pytest.param({"durable": True}, id="durable"),
    ],
)
async def test_a_loop_through_the_store_stops_at_max_causation_depth(db_path: Path, options: dict[str, Any]) -> None:
    stopped = anyio.Event()
    left = EventBus(SqliteStore(db_path), max_causation_depth=_LIMIT)
    right = EventBus(SqliteStore(db_path), max_causation_depth=_LIMIT)

    async def bounce(bus: EventBus, event: Served | Returned) -> None:
        reply = Returned(hop=event.hop + 1) if isinstance(event, Served) else Served(hop=event.hop + 1)
        try:
            await bus.publish(reply)
        except CausationLoopError:
            stopped.set()
            raise

    async def on_served(event: Served) -> None:
        await bounce(right, event)

    async def on_returned(event: Returned) -> None:
        await bounce(left, event)

    # each bus only hears the other's events, and only through the file
    right.subscribe(Served, on_served, name="right", **options)
    left.subscribe(Returned, on_returned, name="left", **options)
    async with left, right:
        await left.publish(Served(hop=0))
        with anyio.fail_after(_WAIT):
            await stopped.wait()
            await left.drain()
            await right.drain()
        records = [record async for record in left.replay()]
        letters = await left.dead_letters.list()  # one store: both buses see the same letters

    assert [record.depth for record in records] == list(range(_LIMIT + 1))
    assert [record.event.hop for record in records] == list(range(_LIMIT + 1))
    assert [letter.error_type for letter in letters] == ["eventbus.exceptions.CausationLoopError"]
    assert letters[0].record.depth == _LIMIT
