"""``eventbus compact URL [--keep N] [--keep-age 30d]``: remove old history by hand.

The command's logic, for the command line to call: `compact_store` opens the
store a URL names, compacts it (see `Store.compact`) and closes it;
`parse_keep_age` reads ``--keep-age``; `describe` is the line to print.
"""

from __future__ import annotations

import os
from datetime import timedelta

import anyio

from ..exceptions import StoreError
from ..store.base import Store
from ..store.retention import CompactResult, parse_age
from ..store.url import store_from_url

__all__ = ["compact_store", "describe", "parse_keep_age"]


def parse_keep_age(text: str) -> timedelta:
    """``--keep-age``: ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``; `ValueError` naming the text otherwise."""
    return parse_age(text)


async def compact_store(url: str, keep: int | None = None, keep_age: timedelta | str | None = None) -> CompactResult:
    """Compact the store at ``url``: keep the newest ``keep`` seqs and/or what is younger than ``keep_age``.

    With neither, the retention in the URL's query string applies
    (``sqlite:///events.db?keep=1000000``); with none at all this is a
    `ValueError`, since there would be nothing to do. Records at or above a
    durable checkpoint, or that a dead letter refers to, always stay. A store
    kept in a file that does not exist is a `StoreError` naming it: compacting
    never creates a store.
    """
    age = parse_keep_age(keep_age) if isinstance(keep_age, str) else keep_age
    store = store_from_url(url)
    if keep is None and age is None and not _has_retention(store):
        raise ValueError(f"nothing to compact {url} to: give --keep and/or --keep-age (or keep= in the URL)")
    path = getattr(store, "path", None)
    if isinstance(path, os.PathLike) and not await anyio.Path(path).exists():
        raise StoreError(f"no store at {url}: {os.fspath(path)} does not exist")
    await store.open()
    try:
        return await store.compact(keep=keep, keep_age=age)
    finally:
        await store.close()


def describe(url: str, result: CompactResult) -> str:
    """One line saying what a compaction did, for the command's output."""
    line = f"{url}: removed {result.removed} records; history now starts at seq {result.first_seq}"
    if result.held_by is not None:
        line += f" (held back by {result.held_by})"
    return line


def _has_retention(store: Store) -> bool:
    """Whether the store was given a retention policy (a durable store's ``options.retention``)."""
    options = getattr(store, "options", None)
    return getattr(options, "retention", None) is not None
