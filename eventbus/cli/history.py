"""``eventbus replay``, ``export`` and ``tail``: reading a store's history."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TextIO

import anyio

from ..record import Record
from ..store.base import DEFAULT_PAGE_SIZE, Store
from ..store.codec import UnreadableRecord
from ._common import Progress, opened_store, record_to_json

__all__ = ["export", "replay", "tail"]

_TAIL_POLL_INTERVAL = 0.2


def json_line(record: Record) -> str:
    """A record as one JSON line (what ``export`` and ``tail`` write)."""
    return json.dumps(record_to_json(record))


def text_line(record: Record) -> str:
    """A record as one line for people to read (what ``replay`` prints); an unreadable row says why."""
    if isinstance(record, UnreadableRecord):
        return f"{record.seq:>8}  cannot be read: {record.problem}"
    data = record.data
    payload = data.decode() if isinstance(data, bytes) else data
    stamp = record.recorded_at.isoformat(timespec="milliseconds")
    return f"{record.seq:>8}  {stamp}  {record.type} v{record.version}  {payload}"


async def export(
    url: str,
    *,
    output: TextIO,
    from_seq: int = 1,
    to_seq: int | None = None,
    types: Sequence[str] = (),
    progress: bool | None = None,
) -> int:
    """Write records as JSON lines; returns how many were written."""
    return await _dump(url, output, json_line, "export", from_seq, to_seq, types, progress)


async def replay(
    url: str,
    *,
    output: TextIO,
    from_seq: int = 1,
    to_seq: int | None = None,
    types: Sequence[str] = (),
    progress: bool | None = None,
) -> int:
    """Print records one per line for people to read; returns how many."""
    return await _dump(url, output, text_line, "replay", from_seq, to_seq, types, progress)


async def tail(
    url: str, *, output: TextIO, from_seq: int | None = None, types: Sequence[str] = (), limit: int | None = None
) -> int:
    """Follow a store, writing JSON lines as records arrive (until ``limit`` or Ctrl-C).

    Stores shared between processes are waited on; others are polled.
    """
    async with opened_store(url) as store:
        next_seq = from_seq if from_seq is not None else await store.head() + 1
        shown = 0
        while limit is None or shown < limit:
            page = await store.read(next_seq, types=types or None, limit=DEFAULT_PAGE_SIZE)
            for record in page[: None if limit is None else limit - shown]:
                output.write(json_line(record) + "\n")
                shown += 1
            output.flush()
            if page:
                next_seq = page[-1].seq + 1
            elif store.features.shared_between_processes:
                await store.wait_for_append(next_seq - 1)
            else:
                await anyio.sleep(_TAIL_POLL_INTERVAL)
        return shown


async def _dump(
    url: str,
    output: TextIO,
    line: Callable[[Record], str],
    label: str,
    from_seq: int,
    to_seq: int | None,
    types: Sequence[str],
    progress: bool | None,
) -> int:
    async with opened_store(url) as store:
        last = to_seq if to_seq is not None else await store.head()
        bar = Progress(max(last - from_seq + 1, 0), label=label, enabled=progress)
        written = 0
        async for page in _pages(store, from_seq, to_seq, types):
            output.writelines(line(record) + "\n" for record in page)
            written += len(page)
            bar.advance(page[-1].seq - page[0].seq + 1)
        bar.close()
        return written


async def _pages(
    store: Store, from_seq: int, to_seq: int | None, types: Sequence[str]
) -> AsyncIterator[Sequence[Record]]:
    next_seq = from_seq
    while True:
        page = await store.read(next_seq, to_seq=to_seq, types=types or None, limit=DEFAULT_PAGE_SIZE)
        if not page:
            return
        yield page
        next_seq = page[-1].seq + 1
