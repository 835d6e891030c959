"""`Replay`: stream stored records back, page by page, in constant memory."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Collection
from itertools import islice
from typing import cast

from .event import Event, registry
from .exceptions import HistoryTruncated
from .record import EventT, Record, decode_events
from .store.base import DEFAULT_PAGE_SIZE, Store

__all__ = ["DECODE_AHEAD", "Replay", "type_names"]

DECODE_AHEAD = 128
"""Records whose events a replay decodes in one go, ahead of the one it yields.

One `decode_events` call for a run of records looks the validator up once,
where `Record.event` is a property and a registry call per record; a run
rather than the whole page, so that an event is not kept alive long before
it is yielded. Decoded replay from SQLite: 28 248 instructions per event
before, 27 312 decoding each page whole (the collector walked the page's
decoded events and promoted them), 26 300 - 26 500 in runs of 64 or 128
(benchmarks/sqlite_instructions.py, CPython 3.11)."""


class Replay(AsyncIterator[Record[EventT]]):
    """Async iterator over ``from_seq <= seq <= to_seq`` of a store.

    ``Replay[OrderPlaced]`` (what ``bus.replay(OrderPlaced)`` returns) yields
    ``Record[OrderPlaced]``, so type checkers know each ``record.event`` is an
    ``OrderPlaced``; bare ``Replay`` yields ``Record[Event]``.

    Records are read a page at a time, so a million records cost the memory of
    one page. Each record's event is decoded as it is yielded: one that cannot
    be decoded raises `EventDecodeError` (or `UnknownEventType`) from
    ``__anext__``, and iterating again goes on with the next record.

    When the records asked for are no longer stored (the store's retention
    removed everything below its ``first_seq``), ``__anext__`` raises
    `HistoryTruncated` naming that first seq, at the start or at the page
    where the replay ran into it; iterating again reads on from there.
    """

    def __init__(
        self,
        store: Store,
        *,
        from_seq: int = 1,
        to_seq: int | None = None,
        types: Collection[str] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        decode: bool = True,
    ) -> None:
        if isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 1:
            raise ValueError(f"from_seq must be an int >= 1, got {from_seq!r}")
        if to_seq is not None and (isinstance(to_seq, bool) or not isinstance(to_seq, int)):
            raise ValueError(f"to_seq must be an int or None, got {to_seq!r}")
        self._store = store
        self._next = from_seq
        self._to = to_seq
        self._types = types
        self._page_size = page_size
        self._decode = decode
        self._page: deque[Record[EventT]] = deque()
        self._decoded_ahead = 0
        """How many of the page's next records `decode_events` has been through."""
        self._exhausted = to_seq is not None and to_seq < from_seq

    def __aiter__(self) -> Replay[EventT]:
        return self

    async def __anext__(self) -> Record[EventT]:
        if not self._page:
            if self._exhausted:
                raise StopAsyncIteration
            try:
                page = await self._store.read(self._next, to_seq=self._to, types=self._types, limit=self._page_size)
            except HistoryTruncated as exc:
                self._next = exc.first_seq
                raise
            if not page:
                self._exhausted = True
                raise StopAsyncIteration
            self._next = page[-1].seq + 1
            # the store returns only records of ``types``, the names of EventT and its subclasses
            self._page.extend(cast(Collection[Record[EventT]], page))
        if not self._decode:
            return self._page.popleft()
        if not self._decoded_ahead:
            self._decoded_ahead = min(len(self._page), DECODE_AHEAD)
            decode_events(islice(self._page, self._decoded_ahead))
        self._decoded_ahead -= 1
        record = self._page.popleft()
        if record.decoded is None:
            record.event  # noqa: B018  # what decode_events left fails here, at its own position
        return record


def type_names(event_types: Collection[type[Event] | str]) -> set[str] | None:
    """The stored type names a replay of ``event_types`` reads: classes (their
    subclasses included) or names; None for every record (no types given, or
    `Event` itself). `TypeError` for anything else."""
    if not event_types:
        return None
    names: set[str] = set()
    for spec in event_types:
        if isinstance(spec, str):
            names.add(spec)
        elif isinstance(spec, type) and issubclass(spec, Event):
            found = registry.names_for((spec,))
            if found is None:
                return None
            names.update(found)
        else:
            raise TypeError(f"replay() takes Event classes or type names, got {spec!r}")
    return names
