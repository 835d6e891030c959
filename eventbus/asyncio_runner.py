"""Running an asyncio-only client library from asyncio and from trio.

For plugins and stores built on a client that only runs on asyncio (asyncpg
in `eventbus-postgres`, nats-py in `eventbus-nats`) while the bus runs on
either. On asyncio the client is awaited in the caller's own event loop
(`DirectRunner`). Under trio there is no asyncio loop to await in, so the
runner owns a private asyncio loop in a dedicated thread
(`LoopThreadRunner`): each call is a coroutine submitted to that loop, and
the trio task sleeps until the loop thread wakes it through trio's token. No
worker thread is held while a call is in flight, so many tasks may wait on
the client at once. Everything the client touches lives on that one loop.

```python
runner = start_runner("the PostgreSQL store", StoreError)  # when opening
pool = await runner.call(asyncpg.create_pool, dsn)
...
await runner.close()  # when closing
```
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

__all__ = ["DirectRunner", "LoopThreadRunner", "Runner", "start_runner"]

P = ParamSpec("P")
T = TypeVar("T")


class Runner(Protocol):
    """Runs coroutine functions on the asyncio loop that owns the client."""

    async def call(self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` on that loop; cancelling the caller cancels it."""
        ...

    async def close(self) -> None:
        """Cancel what is still running there and release the loop."""


class DirectRunner:
    """On asyncio: the client runs in the caller's event loop, at no extra cost."""

    async def call(self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` right here."""
        return await fn(*args, **kwargs)

    async def close(self) -> None:
        """Nothing to release: the loop belongs to the application."""


class LoopThreadRunner:
    """Under trio: a private asyncio event loop in a thread owned by the runner.

    Args:
        owner: what owns the loop, for errors and the thread's name
            (``"the PostgreSQL store"``: the thread is
            ``"the PostgreSQL store: asyncio loop"``).
        error: the exception class raised, with a message naming ``owner``,
            for a call still running when the runner closed.
    """

    def __init__(self, owner: str, error: Callable[[str], Exception]) -> None:
        import trio

        self._trio = trio
        self._owner = owner
        self._error = error
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{owner}: asyncio loop", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the private loop; the trio task sleeps meanwhile.

        Cancelling the trio task cancels the asyncio task too (callers that
        must not be torn, such as appends, shield this call).
        """
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
            raise self._error(f"{self._owner} was closed while a call was running") from None

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


def start_runner(owner: str, error: Callable[[str], Exception] = RuntimeError) -> Runner:
    """The runner for the async library the caller runs on: a `DirectRunner`
    on asyncio, a `LoopThreadRunner` under trio; ``error`` (with a message
    naming ``owner``) on any other."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        return DirectRunner()
    if library == "trio":
        return LoopThreadRunner(owner, error)
    raise error(f"{owner} runs on asyncio or trio, not on {library!r}")
