"""Where nats-py runs, and where the bridge's long-running task runs.

nats-py is asyncio-only. On asyncio the bridge awaits it in the caller's own
loop (`DirectRunner`). Under trio the bridge owns a private asyncio loop in a
dedicated thread (`LoopThreadRunner`): each call is a coroutine submitted to
that loop, and the trio task sleeps until the loop thread wakes it through
trio's token, so no worker thread is held while a call is in flight. The
connection, its reconnects and every JetStream call live on that one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from typing import Any, ParamSpec, Protocol, TypeVar

import anyio
import sniffio

__all__ = ["DirectRunner", "LoopThreadRunner", "Runner", "RunnerClosed", "start_runner"]

P = ParamSpec("P")
T = TypeVar("T")

_THREAD_NAME = "eventbus-nats-asyncio"


class RunnerClosed(Exception):
    """The private loop was closed while a call was running on it."""


class Runner(Protocol):
    """Runs coroutine functions on the asyncio loop that owns the NATS connection."""

    async def call(self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` on that loop; cancelling the caller cancels it."""
        ...

    async def close(self) -> None:
        """Cancel what is still running there and release the loop."""


class DirectRunner:
    """On asyncio: nats-py runs in the caller's event loop, at no extra cost."""

    async def call(self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` right here."""
        return await fn(*args, **kwargs)

    async def close(self) -> None:
        """Nothing to release: the loop belongs to the application."""


class LoopThreadRunner:
    """Under trio: a private asyncio event loop in a thread owned by the bridge."""

    def __init__(self) -> None:
        import trio

        self._trio = trio
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=_THREAD_NAME, daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the private loop; the trio task sleeps meanwhile.
        Cancelling the trio task cancels the asyncio task too."""
        trio = self._trio
        future = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: Future[T]) -> None:
            # RunFinishedError: the caller's trio run is over; nobody is waiting any more.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        try:
            return future.result()
        except FutureCancelled:
            raise RunnerClosed("the NATS bridge's asyncio loop was closed while a call was running") from None

    async def close(self) -> None:
        """Cancel the loop's remaining tasks, stop it, and join its thread."""
        await self.call(_cancel_remaining_tasks)
        self._loop.call_soon_threadsafe(self._loop.stop)
        await anyio.to_thread.run_sync(self._thread.join)
        self._loop.close()


async def _cancel_remaining_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_default_executor()


def start_runner() -> Runner:
    """The runner for the async library the caller runs on (asyncio or trio)."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        return DirectRunner()
    if library == "trio":
        return LoopThreadRunner()
    raise RuntimeError(f"the NATS bridge runs on asyncio or trio, not on {library!r}")
