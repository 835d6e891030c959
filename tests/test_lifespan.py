"""`EventBus.lifespan`: a web app's lifespan runs the bus (``FastAPI(lifespan=bus.lifespan)``),
started before the app takes requests, stopped and drained when it shuts down, again at each start."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from fastapi import FastAPI

from eventbus import BusState, EventBus
from tests.policy_events import WAIT, Tick


async def test_the_apps_lifespan_runs_the_bus_and_drains_it_at_shutdown() -> None:
    bus = EventBus()
    handled: list[int] = []

    @bus.subscribe
    async def slow(event: Tick) -> None:
        await anyio.lowlevel.checkpoint()  # handled on the bus's loop, after a checkpoint
        handled.append(event.n)

    app = FastAPI(lifespan=bus.lifespan)
    for start in range(2):  # a stopped bus runs again at the app's next start
        with anyio.fail_after(WAIT):
            async with app.router.lifespan_context(app):
                assert bus.state is BusState.RUNNING
                await bus.publish(Tick(n=start))
        assert bus.state is BusState.STOPPED
        assert handled == list(range(start + 1)), "the shutdown drained what was published"


async def test_an_error_in_the_apps_life_stops_the_bus_and_propagates() -> None:
    bus = EventBus()
    app = FastAPI(lifespan=bus.lifespan)
    with pytest.raises(LookupError, match="the app failed"):
        async with app.router.lifespan_context(app):
            raise LookupError("the app failed")
    assert bus.state is BusState.STOPPED
