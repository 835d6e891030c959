"""``eventbus dlq list|redrive|purge``: dead letters in a store."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

import click
from rich.console import Group
from rich.table import Table

from ..deadletters import DeadLetter
from ..store.url import redact_url
from ._common import (
    CommandError,
    dead_letter_to_json,
    opened_store,
    people,
    print_help_when_bare,
    run,
    url_argument,
)
from ._loader import load_bus

__all__ = ["Redriven", "dlq_group", "letters_in", "purge", "redrive"]

_UUID_WIDTH = 36
_TABLE_WIDTH = 120
"""Below this many columns, `dlq list` prints one block per letter instead of a table."""
_ids_option = click.option(
    "--id", "ids", type=click.UUID, multiple=True, metavar="UUID", help="Only this letter (repeatable)."
)
_subscription_option = click.option("--subscription", metavar="NAME", help="Only this subscription's letters.")


async def letters_in(url: str, *, subscription: str | None = None, ids: Sequence[UUID] = ()) -> list[DeadLetter]:
    """The stored dead letters, oldest first: those with ``ids`` if given, of ``subscription`` if given.

    Raises `CommandError` listing the ``ids`` that match no such letter, so
    that a mistyped or stale id is never passed over in silence.
    """
    async with opened_store(url) as store:
        letters = list(await store.dead_letters(subscription))
    if ids:
        wanted = set(ids)
        letters = [letter for letter in letters if letter.id in wanted]
        unmatched = wanted - {letter.id for letter in letters}
        if unmatched:
            of = f" of {subscription!r}" if subscription is not None else ""
            listed = ", ".join(sorted(map(str, unmatched)))
            raise CommandError(
                f"no dead letter{of} has the id {listed} in {url} (see `eventbus dlq list`); nothing was done"
            )
    return letters


async def purge(url: str, ids: Sequence[UUID]) -> int:
    """Delete the letters with these ids; returns how many there were."""
    async with opened_store(url) as store:
        return await store.delete_dead_letters(ids)


@dataclass(frozen=True)
class Redriven:
    """What `redrive` did.

    Attributes:
        succeeded: letters delivered this time (and removed).
        left: letters left in the store, of every subscription.
        renamed: the letters that failed again, old id → new id: the store
            keeps a failure as a new letter that replaces the old one.
    """

    succeeded: int
    left: int
    renamed: Mapping[UUID, UUID]


async def redrive(url: str, *, app: str, ids: Sequence[UUID] = ()) -> Redriven:
    """Deliver letters again through the handlers of the application's bus.

    ``app`` is ``"module:factory"``: a function taking a store URL and
    returning the application's `EventBus` with its subscriptions (the
    handlers to call). The store must exist, and so must every letter of
    ``ids`` (checked before the bus starts: a `CommandError` names the others).
    """
    chosen = await letters_in(url, ids=ids)  # also: the app's bus would create a missing store
    bus = load_bus(app, url)
    async with bus:
        succeeded = await bus.dead_letters.redrive(ids or None)
        left = await bus.dead_letters.list()
    # a letter that failed again was replaced by one for the same delivery, which keeps its first failure time
    replacements = {(letter.subscription, letter.record.seq, letter.first_failed_at): letter.id for letter in left}
    renamed = {
        letter.id: new
        for letter in chosen
        if (new := replacements.get((letter.subscription, letter.record.seq, letter.first_failed_at), letter.id))
        != letter.id
    }
    return Redriven(succeeded, len(left), renamed)


@click.group("dlq", invoke_without_command=True)
@click.pass_context
def dlq_group(ctx: click.Context) -> None:
    """Dead letters: list, redrive or purge them."""
    print_help_when_bare(ctx)


@dlq_group.command("list")
@url_argument
@_subscription_option
@click.option("--json", "as_json", is_flag=True, help="JSON lines, with the whole record and traceback.")
def list_command(url: str, subscription: str | None, as_json: bool) -> None:
    """List dead letters, oldest first.

    The table shows each letter's id, subscription, event and error; --json
    adds the whole record, the traceback and the failure times.
    """
    letters = run(letters_in, url, subscription=subscription)
    if as_json:
        sys.stdout.writelines(json.dumps(dead_letter_to_json(letter)) + "\n" for letter in letters)
        return
    console = people()
    if not letters:
        console.print("no dead letters")
        return
    console.print(_letters_table(letters) if console.width >= _TABLE_WIDTH else _letter_blocks(letters))


def _error(letter: DeadLetter) -> str:
    return f"{letter.error_type.rpartition('.')[2]}: {letter.error_message}"


def _letters_table(letters: Sequence[DeadLetter]) -> Table:
    """One row per letter, for wide terminals."""
    table = Table()
    table.add_column("id", no_wrap=True, min_width=_UUID_WIDTH)  # whole, for `dlq purge --id`
    table.add_column("subscription")
    table.add_column("seq", justify="right")
    table.add_column("type")
    table.add_column("attempts", justify="right")
    table.add_column("error", ratio=1)
    for letter in letters:
        record = letter.record
        table.add_row(
            str(letter.id), letter.subscription, str(record.seq), record.type, str(letter.attempts), _error(letter)
        )
    return table


def _letter_blocks(letters: Sequence[DeadLetter]) -> Group:
    """One block of labelled lines per letter, for narrow terminals: nothing is cut, the error wraps under its label."""
    blocks: list[Table] = []
    for letter in letters:
        block = Table.grid(padding=(0, 2))
        block.add_column(style="bold", no_wrap=True)
        block.add_column(overflow="fold")
        block.add_row("id", str(letter.id))
        block.add_row("subscription", letter.subscription)
        block.add_row("event", f"seq {letter.record.seq}, {letter.record.type}")
        block.add_row("attempts", str(letter.attempts))
        block.add_row("error", _error(letter))
        blocks.append(block)
    return Group(*(part for block in blocks for part in (block, "")))


@dlq_group.command("purge")
@url_argument
@_ids_option
@_subscription_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def purge_command(url: str, ids: tuple[UUID, ...], subscription: str | None, yes: bool) -> None:
    """Delete dead letters: the --id ones, or all of one --subscription, or all.

    Asks first, on a terminal (answering no purges nothing and exits with
    status 0); without one, it refuses unless --yes is given. An --id that
    matches no letter is an error (status 1), and nothing is purged.
    """
    letters = run(letters_in, url, subscription=subscription, ids=ids)
    if not letters:
        click.echo("no dead letters to purge", err=True)
        return
    question = f"Purge {len(letters)} dead letters from {redact_url(url)}?"
    if not yes:
        if not sys.stdin.isatty():
            raise CommandError(f"not purging {len(letters)} dead letters without --yes: there is no terminal to ask on")
        if not click.confirm(question, err=True):
            click.echo("nothing purged", err=True)
            return
    purged = run(purge, url, [letter.id for letter in letters])
    click.echo(f"purged {purged} dead letters", err=True)


@dlq_group.command("redrive")
@url_argument
@click.option(
    "--app", required=True, metavar="MODULE:FUNCTION", help="Function taking a store URL, returning your EventBus."
)
@_ids_option
def redrive_command(url: str, app: str, ids: tuple[UUID, ...]) -> None:
    """Deliver dead letters again through your application's handlers.

    A letter that fails again is stored under a new id, printed beside the
    old one. Exits with status 0 when no letter is left in the store, 2 when
    some are, 1 when an --id matches no letter (then nothing is redriven).
    """
    done = run(redrive, url, app=app, ids=ids)
    click.echo(f"redrove {done.succeeded} dead letters; {done.left} left", err=True)
    for old, new in done.renamed.items():
        click.echo(f"failed again: {old} is now {new}", err=True)
    if done.left:
        raise click.exceptions.Exit(2)
