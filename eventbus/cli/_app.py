"""The ``eventbus`` command group: how errors end a command, the demo, and the list of commands."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from .. import __version__
from ..exceptions import EventBusError
from ._common import CommandError, print_help_when_bare, run
from ._version import VERSION_LINE
from .catalog import catalog_command
from .compact import compact_command
from .deadletters import dlq_group
from .history import export_command, replay_command, tail_command
from .projection import projection_group
from .stats import stats_command
from .trace import trace_command

__all__ = ["COMMANDS", "cli"]

_INTERRUPTED = 130
"""Exit status after Ctrl-C, as shells report a process ended by SIGINT."""


class _Group(click.Group):
    """Turns the errors a user can act on into one line on stderr and exit status 1.

    Ctrl-C exits with status 130; a closed pipe on stdout ends the command quietly.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # the reader went away (`eventbus export URL | head`): stop quietly, as the docs of `signal` advise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(1) from None
        except (EventBusError, ValueError, OSError) as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
        except KeyboardInterrupt:
            raise click.exceptions.Exit(_INTERRUPTED) from None


@click.group(
    cls=_Group,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", message=VERSION_LINE)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """A typed event bus: the demo, and tools that work on any store by URL.

    Store URLs: sqlite:///relative.db, sqlite:////absolute.db,
    postgresql://user@host:5432/db, memory://. Commands that only read
    never create a store: a missing one is an error naming it.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A shell starts a background job with SIGINT ignored, and the job's
        # children inherit that; `eventbus tail` started so would never stop
        # on Ctrl-C (SIGINT) with status 130 as every command promises.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    print_help_when_bare(ctx)


@cli.command("demo")
@click.option("--store", metavar="URL", help="Store URL [default: sqlite:///eventbus-demo.db].")
def demo_command(store: str | None) -> None:
    """A guided tour of a small order service on a SQLite file."""
    # imported here: the demo's event classes must not be registered in every
    # command (the catalog lists every registered event type)
    from .demo import DEFAULT_DEMO_STORE, run_demo

    run(run_demo, store or DEFAULT_DEMO_STORE, out=sys.stdout)


COMMANDS: tuple[click.Command, ...] = (
    replay_command,
    export_command,
    tail_command,
    stats_command,
    dlq_group,
    catalog_command,
    compact_command,
    projection_group,
    trace_command,
)
"""The commands besides ``demo``, each defined in the module of its concept."""

for _command in COMMANDS:
    cli.add_command(_command)
