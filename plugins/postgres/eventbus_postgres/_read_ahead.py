"""Reading the next page while a reader pages through the store handles this one.

A replay or a catch-up reads a page, turns its rows into records and handles
them, then asks for the page after it. Done in turn, the server sits idle
while this process works and this process waits while the server does. So
after a full page the store sends the query for the next one at once, and
the reader's next `read` of exactly that page takes its answer.

Only a full page is taken: seqs are assigned in commit order, so the first
``limit`` rows from a seq never change once they are all there (retention
may remove them later, as it may remove a page just read), while a short
page may have grown since it was read. A read ahead that failed is read
again, which reports its own error. At most `MAX_PAGES` pages are read ahead
at once (one per reader paging through); the oldest gives way to a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["MAX_PAGES", "MIN_LIMIT", "PageKey", "ReadAhead"]

MAX_PAGES = 4
"""Pages read ahead at once; each holds a pooled connection while it is read."""

MIN_LIMIT = 100
"""Pages of fewer rows are not read ahead: such reads are lookups more often than a reader paging through."""

PageKey = tuple[int, int, int, tuple[str, ...] | None]
"""A page as `Store.read` asks for it: from_seq, the last seq wanted, limit, the type names kept."""

Rows = list[Any]


class ReadAhead:
    """The pages read ahead, by `PageKey`; lives on the loop the store's pool runs on."""

    def __init__(self) -> None:
        self._pages: dict[PageKey, asyncio.Task[Rows]] = {}

    def take(self, key: PageKey) -> asyncio.Task[Rows] | None:
        """The page read ahead for ``key`` (done or not), no longer kept here; None when there is none."""
        return self._pages.pop(key, None)

    async def start(self, key: PageKey, read: Callable[[], Coroutine[Any, Any, Rows]]) -> None:
        """Read the page ``key`` now, to be taken later; returns once its query is on its way."""
        if key in self._pages:
            return
        if len(self._pages) >= MAX_PAGES:
            self._pages.pop(next(iter(self._pages))).cancel()
        task = asyncio.ensure_future(read())
        task.add_done_callback(_retrieve)
        self._pages[key] = task
        await asyncio.sleep(0)  # the task sends its query now, not once this reader awaits again

    async def close(self) -> None:
        """Cancel every page still read ahead, and wait for them to let go of their connections."""
        tasks, self._pages = list(self._pages.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _retrieve(task: asyncio.Task[Rows]) -> None:
    """Mark a failure as seen: a page nobody took fails quietly (a reader that takes it reads again)."""
    if not task.cancelled():
        task.exception()
