"""``eventbus replay``, ``export`` and ``tail``: reading a store's history."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

import anyio
import click

from ..record import Record
from ..store.base import DEFAULT_PAGE_SIZE, Store
from ._common import json_line, opened_store, run, text_line, types_option, url_argument
from ._progress import progress

__all__ = ["dump", "export_command", "pages", "replay_command", "tail", "tail_command"]

_TAIL_POLL_INTERVAL = 0.2
_SEQ = click.IntRange(min=1)


async def dump(
    url: str,
    line: Callable[[Record], str],
    *,
    path: str | None = None,
    from_seq: int | None = None,
    to_seq: int | None = None,
    types: Sequence[str] = (),
    label: str = "reading",
) -> int:
    """Write each record in range as ``line(record)``, to stdout or the file ``path``; returns how many.

    The file is opened once the store is: a missing store leaves no file
    behind. A progress bar runs on stderr while it works, when stderr is a
    terminal. Reads page by page, in constant memory. Without ``from_seq`` it
    starts at the first seq the store still holds; one below it is
    `HistoryTruncated` naming that seq.
    """
    async with opened_store(url) as store:
        if from_seq is None:
            from_seq = store.first_seq
        last = to_seq if to_seq is not None else await store.head()
        written = 0
        with _opened(path) as file, progress(last - from_seq + 1, label=label) as advance:
            # stdout is looked up here: while a bar is drawn on the same terminal, Rich stands in for it
            write = (sys.stdout if file is None else file).write
            async for page in pages(store, from_seq, to_seq, types):
                write("".join([line(record) + "\n" for record in page]))
                written += len(page)
                advance(page[-1].seq - page[0].seq + 1)
        return written


@contextmanager
def _opened(path: str | None) -> Iterator[TextIO | None]:
    """The file ``path`` opened for writing, or None for stdout."""
    if path is None:
        yield None
        return
    with open(path, "w", encoding="utf-8") as file:
        yield file


async def tail(
    url: str,
    line: Callable[[Record], str],
    *,
    output: TextIO,
    from_seq: int | None = None,
    types: Sequence[str] = (),
    limit: int | None = None,
) -> int:
    """Follow a store, writing ``line(record)`` as records arrive (until ``limit`` or Ctrl-C).

    Stores shared between processes are waited on; others are polled.
    """
    async with opened_store(url) as store:
        next_seq = from_seq if from_seq is not None else await store.head() + 1
        shown = 0
        while limit is None or shown < limit:
            page = await store.read(next_seq, types=types or None, limit=DEFAULT_PAGE_SIZE)
            for record in page[: None if limit is None else limit - shown]:
                output.write(line(record) + "\n")
                shown += 1
            output.flush()
            if page:
                next_seq = page[-1].seq + 1
            elif store.features.shared_between_processes:
                await store.wait_for_append(next_seq - 1)
            else:
                await anyio.sleep(_TAIL_POLL_INTERVAL)
        return shown


async def pages(
    store: Store, from_seq: int, to_seq: int | None, types: Sequence[str]
) -> AsyncIterator[Sequence[Record]]:
    """The records from ``from_seq`` to ``to_seq`` (None: the end) of the ``types`` (none: all), a page at a time."""
    next_seq = from_seq
    while True:
        page = await store.read(next_seq, to_seq=to_seq, types=types or None, limit=DEFAULT_PAGE_SIZE)
        if not page:
            return
        yield page
        next_seq = page[-1].seq + 1


def _range_options(command: Callable[..., None]) -> Callable[..., None]:
    command = types_option(command)
    command = click.option("--to-seq", type=_SEQ, default=None, help="Last seq to read [default: the head].")(command)
    return click.option(
        "--from-seq", type=_SEQ, default=None, help="First seq to read [default: the first one still stored]."
    )(command)


@click.command("replay")
@url_argument
@_range_options
@click.option("--json", "as_json", is_flag=True, help="JSON lines (as `export` writes) instead of text.")
def replay_command(url: str, from_seq: int | None, to_seq: int | None, types: tuple[str, ...], as_json: bool) -> None:
    """Print stored records, one per line, for people to read.

    Reads the stored JSON as it is, so it works without the event classes.
    A progress bar runs on stderr when stderr is a terminal.
    """
    line = json_line if as_json else text_line
    run(dump, url, line, from_seq=from_seq, to_seq=to_seq, types=types, label="replay")


@click.command("export")
@url_argument
@_range_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="File to write [default: stdout].",
)
def export_command(url: str, from_seq: int | None, to_seq: int | None, types: tuple[str, ...], output: str) -> None:
    """Write stored records as JSON lines, for programs.

    A progress bar runs on stderr when stderr is a terminal.
    """
    path = None if output == "-" else output
    written = run(dump, url, json_line, path=path, from_seq=from_seq, to_seq=to_seq, types=types, label="export")
    if path is not None:
        click.echo(f"exported {written} records to {path}", err=True)


@click.command("tail")
@url_argument
@click.option("--from-seq", type=_SEQ, default=None, help="Start here [default: after the head].")
@types_option
@click.option("--limit", type=_SEQ, default=None, help="Stop after this many records.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines (as `export` writes) instead of text.")
def tail_command(url: str, from_seq: int | None, types: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """Follow a store, printing records as they arrive.

    Runs until Ctrl-C, or until --limit records.
    """
    line = json_line if as_json else text_line
    run(tail, url, line, output=sys.stdout, from_seq=from_seq, types=types, limit=limit)
