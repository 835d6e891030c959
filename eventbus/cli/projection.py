"""``eventbus projection rebuild URL NAME [--reset SQL]...``: start a projection over from seq 1.

`rebuild` opens the store a URL names (never creating it) and resets the
projection's checkpoint with `rebuild_projection`, running the ``--reset``
statements (the read model's own clearing) in the same transaction.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from ..projection import rebuild_projection
from ..store.url import redact_url
from ..transaction import Transaction
from ._common import CommandError, opened_store, print_help_when_bare, run, url_argument

__all__ = ["projection_group", "rebuild"]


async def rebuild(url: str, name: str, reset: Sequence[str]) -> None:
    """Reset projection ``name`` of the store at ``url`` to seq 1, running each
    of ``reset`` (SQL without arguments) in the same transaction; a name no
    subscription has saved a checkpoint under is a `CommandError` listing the
    names there (a typo must not start a new one)."""

    async def run_reset(tx: Transaction) -> None:
        for statement in reset:
            await tx.execute(statement)

    async with opened_store(url) as store:
        saved = await store.checkpoints()
        if name not in saved:
            known = ", ".join(repr(known) for known in sorted(saved)) or "none"
            raise CommandError(
                f"no subscription named {name!r} has run on {redact_url(url)} (the names saved there: {known})"
            )
        await rebuild_projection(store, name, run_reset)


@click.group("projection", invoke_without_command=True)
@click.pass_context
def projection_group(ctx: click.Context) -> None:
    """Projections: durable subscriptions whose handler takes a Transaction."""
    print_help_when_bare(ctx)


@projection_group.command("rebuild")
@url_argument
@click.argument("name")
@click.option(
    "--reset",
    "reset",
    multiple=True,
    metavar="SQL",
    help="A statement clearing the read model, run in the checkpoint's transaction (repeatable).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rebuild_command(url: str, name: str, reset: tuple[str, ...], yes: bool) -> None:
    """Start projection NAME over from seq 1: its checkpoint goes back to 0, and
    the --reset statements run, in one transaction.

    The next start of the service delivers every stored event to the
    projection again. Refused while a process delivers it (holds its lease).
    Asks first, on a terminal; without one, it refuses unless --yes is given.
    """
    if not yes:
        if not sys.stdin.isatty():
            raise CommandError(f"not rebuilding projection {name!r} without --yes: there is no terminal to ask on")
        question = f"Rebuild projection {name!r} of {redact_url(url)} from seq 1"
        if reset:
            question += f", running {len(reset)} reset statement(s)"
        if not click.confirm(question + "?", err=True):
            click.echo("nothing changed", err=True)
            return
    run(rebuild, url, name, reset)
    click.echo(f"projection {name!r} starts over from seq 1 the next time it runs", err=True)
