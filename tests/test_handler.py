"""`eventbus.handler`: what a sync callable returns is awaited when it is
awaitable, generator functions are refused, plain async handlers are called
without an extra coroutine frame."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from core_events import WAIT, Ping

from eventbus import EventBus, Record
from eventbus.handler import make_handle


def logged(func: Callable[..., Any]) -> Callable[..., Any]:
    """An ordinary decorator: its wrapper is a sync function handing back the coroutine."""

    @functools.wraps(func)
    def wrapper(*args: Any) -> Any:
        return func(*args)

    return wrapper


def _record(n: int) -> Record:
    return Record(1, Ping(n=n), "core.ping", 1, 1, time.time_ns())


async def test_an_async_handler_behind_an_ordinary_decorator_is_awaited() -> None:
    handled: list[int] = []
    async with EventBus() as bus:

        @bus.subscribe
        @logged
        async def wrapped(event: Ping) -> None:
            await anyio.lowlevel.checkpoint()
            handled.append(event.n)

        await bus.publish(Ping(n=1))
        await bus.drain(WAIT)
        assert handled == [1]
        assert bus.stats().subscriptions[wrapped.__qualname__].delivered == 1


async def test_a_lambda_returning_a_coroutine_is_awaited_and_its_failure_dead_letters() -> None:
    handled: list[int] = []

    async def work(event: Ping, record: Record) -> None:
        await anyio.lowlevel.checkpoint()
        if event.n < 0:
            raise ValueError("negative")
        handled.append(record.seq)

    async with EventBus() as bus:
        bus.subscribe(Ping, lambda event, record: work(event, record), name="lambda")
        await bus.publish(Ping(n=1))
        await bus.publish(Ping(n=-1))
        await bus.drain(WAIT)
        [letter] = await bus.dead_letters.list()
        stats = bus.stats().subscriptions["lambda"]
    assert handled == [1]
    assert (letter.error_type, letter.record.seq) == ("builtins.ValueError", 2)
    assert (stats.delivered, stats.dead_lettered) == (1, 1)


async def test_a_sync_handler_in_a_thread_returning_a_coroutine_has_it_awaited_on_the_loop() -> None:
    handled: list[int] = []

    async def finish(event: Ping) -> None:
        await anyio.lowlevel.checkpoint()
        handled.append(event.n)

    def in_thread(event: Ping) -> Awaitable[None]:
        return finish(event)

    async with EventBus() as bus:
        bus.subscribe(Ping, in_thread, in_thread=True)
        await bus.publish(Ping(n=7))
        await bus.drain(WAIT)
    assert handled == [7]


async def test_a_plain_async_handler_gets_no_extra_coroutine_frame() -> None:
    async def plain(event: Ping) -> None: ...

    coroutine = make_handle(plain)(_record(1))
    assert getattr(coroutine, "cr_code", None) is plain.__code__
    await coroutine


@pytest.mark.parametrize("in_thread", [False, True])
def test_generator_functions_and_objects_are_refused(in_thread: bool) -> None:
    async def agen(event: Ping) -> Any:
        yield event

    def gen(event: Ping) -> Any:
        yield event

    class Streamer:
        async def __call__(self, event: Ping) -> Any:
            yield event

    for handler in (agen, gen, Streamer(), functools.partial(agen)):
        with pytest.raises(TypeError, match="generator function"):
            make_handle(handler, in_thread=in_thread)
