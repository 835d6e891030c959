"""``eventbus compact URL [--keep N] [--keep-age 30d]``: remove old history by hand.

`compact_store` opens the store a URL names (never creating it), compacts it
(see `Store.compact`) and closes it; `parse_keep_age` reads ``--keep-age``;
`describe` is the line the command prints.
"""

from __future__ import annotations

from datetime import timedelta

import click

from ..store.base import Store
from ..store.retention import CompactResult, parse_age
from ..store.url import redact_url, store_from_url
from ._common import run, url_argument

__all__ = ["compact_command", "compact_store", "describe", "parse_keep_age"]


def parse_keep_age(text: str) -> timedelta:
    """``--keep-age``: ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``; `ValueError` naming the text otherwise."""
    return parse_age(text)


async def compact_store(url: str, keep: int | None = None, keep_age: timedelta | str | None = None) -> CompactResult:
    """Compact the store at ``url``: keep the newest ``keep`` seqs and/or what is younger than ``keep_age``.

    With neither, the retention in the URL's query string applies
    (``sqlite:///events.db?keep=1000000``); with none at all this is a
    `ValueError`, since there would be nothing to do. Records at or above a
    durable checkpoint, or that a dead letter refers to, always stay. A
    missing SQLite file or PostgreSQL schema is a `StoreError` naming it:
    compacting never creates a store.
    """
    age = parse_keep_age(keep_age) if isinstance(keep_age, str) else keep_age
    store = store_from_url(url, create=False)
    if keep is None and age is None and not _has_retention(store):
        raise ValueError(
            f"nothing to compact {redact_url(url)} to: give --keep and/or --keep-age (or keep= in the URL)"
        )
    await store.open()
    try:
        return await store.compact(keep=keep, keep_age=age)
    finally:
        await store.close()


def describe(url: str, result: CompactResult) -> str:
    """One line saying what a compaction did, for the command's output (the URL's password hidden)."""
    line = f"{redact_url(url)}: removed {result.removed} records; history now starts at seq {result.first_seq}"
    if result.held_by is not None:
        line += f" (held back by {result.held_by})"
    return line


@click.command("compact")
@url_argument
@click.option("--keep", type=click.IntRange(min=0), metavar="N", help="Keep the newest N seqs.")
@click.option(
    "--keep-age",
    type=parse_keep_age,
    metavar="AGE",
    help="Keep records younger than AGE: 30d, 12h, 90m, 45s or 2w.",
)
def compact_command(url: str, keep: int | None, keep_age: timedelta | None) -> None:
    """Remove old history now, and print what went.

    With both options each is a limit; with neither, the retention in the
    URL (?keep=1000000&keep_age=30d) applies. Records at or above a durable
    checkpoint, or that a dead letter refers to, always stay. Never creates
    a store.
    """
    click.echo(describe(url, run(compact_store, url, keep, keep_age)))


def _has_retention(store: Store) -> bool:
    """Whether the store was given a retention policy (a durable store's ``options.retention``)."""
    options = getattr(store, "options", None)
    return getattr(options, "retention", None) is not None
