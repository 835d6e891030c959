"""What the commands share: opening a store by URL, records and dead letters as text and JSON."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, ParamSpec, TypeVar

import anyio
import click
from rich.console import Console

from ..deadletters import DeadLetter
from ..exceptions import EventDecodeError
from ..record import Record
from ..store.base import Store
from ..store.codec import UnreadableRecord
from ..store.url import redact_url, store_from_url

__all__ = [
    "CommandError",
    "dead_letter_to_json",
    "json_line",
    "opened_store",
    "people",
    "print_help_when_bare",
    "record_to_json",
    "run",
    "text_line",
    "types_option",
    "url_argument",
]

P = ParamSpec("P")
T = TypeVar("T")

url_argument = click.argument("url", metavar="URL")
"""The store URL every store command takes first, e.g. ``sqlite:///events.db``."""

types_option = click.option(
    "--type", "types", multiple=True, metavar="NAME", help="Only records of this type name (repeatable)."
)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


class CommandError(click.ClickException):
    """A command failed for a reason its user can act on: one line on stderr, exit status 1.

    Every URL in the message is shown with its password hidden.
    """

    def __init__(self, message: str) -> None:
        super().__init__(_URL.sub(lambda url: redact_url(url.group()), message))

    def show(self, file: Any = None) -> None:
        """Print ``eventbus: <message>`` on stderr."""
        click.echo(f"eventbus: {self.format_message()}", file=file, err=True)


def run(function: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run an async command body to the end (on asyncio) and return its result."""
    return anyio.run(partial(function, *args, **kwargs))


def print_help_when_bare(ctx: click.Context) -> None:
    """In a group's callback: a call without a command prints the group's help (exit status 0)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def people() -> Console:
    """A Rich console on stdout for tables; text is printed as given, never read as markup."""
    return Console(markup=False, highlight=False)


@asynccontextmanager
async def opened_store(url: str, *, create: bool = False) -> AsyncIterator[Store]:
    """The store a URL names, opened for the duration of the block.

    By default the store must exist: a missing SQLite file or PostgreSQL
    schema is a `StoreError` naming it, and nothing is created.
    """
    store = store_from_url(url, create=create)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def record_to_json(record: Record) -> dict[str, Any]:
    """A record as one JSON object, without needing its event class.

    The payload is the stored JSON itself, so a tool can export a store whose
    event classes it cannot import. A stored row that cannot be read raises
    `EventDecodeError` naming its seq.
    """
    if isinstance(record, UnreadableRecord):
        raise record.error()
    try:
        data = json.loads(record.data)
    except ValueError as exc:
        raise EventDecodeError(
            f"stored record seq {record.seq} of type {record.type!r}: its data is not JSON ({exc})",
            seq=record.seq,
            type=record.type,
        ) from None
    return {
        "seq": record.seq,
        "type": record.type,
        "version": record.version,
        "event_id": str(record.event_id),
        "recorded_at": record.recorded_at.isoformat(),
        "correlation_id": str(record.correlation_id),
        "causation_id": None if record.causation_id is None else str(record.causation_id),
        "headers": dict(record.headers),
        "data": data,
    }


def json_line(record: Record) -> str:
    """A record as one JSON line (what ``export``, ``replay --json`` and ``tail --json`` write)."""
    return json.dumps(record_to_json(record))


def text_line(record: Record) -> str:
    """A record as one line for people to read (what ``replay`` and ``tail`` print); an unreadable row says why."""
    if isinstance(record, UnreadableRecord):
        return f"{record.seq:>8}  cannot be read: {record.problem}"
    data = record.data
    payload = data.decode() if isinstance(data, bytes) else data
    stamp = record.recorded_at.isoformat(timespec="milliseconds")
    return f"{record.seq:>8}  {stamp}  {record.type} v{record.version}  {payload}"


def dead_letter_to_json(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as one JSON object (its record as in `record_to_json`)."""
    return {
        "id": str(letter.id),
        "subscription": letter.subscription,
        "attempts": letter.attempts,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "first_failed_at": letter.first_failed_at.isoformat(),
        "last_failed_at": letter.last_failed_at.isoformat(),
        "traceback": letter.traceback,
        "record": record_to_json(letter.record),
    }
