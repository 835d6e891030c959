"""``eventbus dlq list|redrive|purge``: dead letters in a store."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from uuid import UUID

import click
from rich.table import Table

from ..deadletters import DeadLetter
from ..store.url import redact_url
from ._common import (
    CommandError,
    dead_letter_to_json,
    ensure_store,
    opened_store,
    people,
    print_help_when_bare,
    run,
    url_argument,
)
from ._loader import load_bus

__all__ = ["dlq_group", "letters_in", "purge", "redrive"]

_UUID_WIDTH = 36
_ids_option = click.option(
    "--id", "ids", type=click.UUID, multiple=True, metavar="UUID", help="Only this letter (repeatable)."
)
_subscription_option = click.option("--subscription", metavar="NAME", help="Only this subscription's letters.")


async def letters_in(url: str, *, subscription: str | None = None, ids: Sequence[UUID] = ()) -> list[DeadLetter]:
    """The stored dead letters, oldest first: those with ``ids`` if given, of ``subscription`` if given."""
    async with opened_store(url) as store:
        letters = list(await store.dead_letters(subscription))
    if ids:
        wanted = set(ids)
        letters = [letter for letter in letters if letter.id in wanted]
    return letters


async def purge(url: str, ids: Sequence[UUID]) -> int:
    """Delete the letters with these ids; returns how many there were."""
    async with opened_store(url) as store:
        return await store.delete_dead_letters(ids)


async def redrive(url: str, *, app: str, ids: Sequence[UUID] = ()) -> tuple[int, int]:
    """Deliver letters again through the handlers of the application's bus.

    ``app`` is ``"module:factory"``: a function taking a store URL and
    returning the application's `EventBus` with its subscriptions (the
    handlers to call). The store must exist. Returns (succeeded, letters left).
    """
    await ensure_store(url)  # the app's bus would create a missing store
    bus = load_bus(app, url)
    async with bus:
        succeeded = await bus.dead_letters.redrive(ids or None)
        left = len(await bus.dead_letters.list())
    return succeeded, left


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
    table = Table()
    table.add_column("id", no_wrap=True, min_width=_UUID_WIDTH)  # whole, for `dlq purge --id`
    table.add_column("subscription")
    table.add_column("seq", justify="right")
    table.add_column("type")
    table.add_column("attempts", justify="right")
    table.add_column("error", ratio=1)
    for letter in letters:
        table.add_row(
            str(letter.id),
            letter.subscription,
            str(letter.record.seq),
            letter.record.type,
            str(letter.attempts),
            f"{letter.error_type.rpartition('.')[2]}: {letter.error_message}",
        )
    console.print(table)


@dlq_group.command("purge")
@url_argument
@_ids_option
@_subscription_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def purge_command(url: str, ids: tuple[UUID, ...], subscription: str | None, yes: bool) -> None:
    """Delete dead letters: the --id ones, or all of one --subscription, or all.

    Asks first, on a terminal; without one, it refuses unless --yes is given.
    """
    letters = run(letters_in, url, subscription=subscription, ids=ids)
    if not letters:
        click.echo("no dead letters to purge", err=True)
        return
    question = f"Purge {len(letters)} dead letters from {redact_url(url)}?"
    if not yes:
        if not sys.stdin.isatty():
            raise CommandError(f"not purging {len(letters)} dead letters without --yes: there is no terminal to ask on")
        click.confirm(question, abort=True, err=True)
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

    Exits with status 0 when no letter is left in the store, 2 when some are.
    """
    succeeded, left = run(redrive, url, app=app, ids=ids)
    click.echo(f"redrove {succeeded} dead letters; {left} left", err=True)
    if left:
        raise click.exceptions.Exit(2)
