"""The ``eventbus`` command: the demo, and tools that work on any store by URL.

```
eventbus demo [--store URL]
eventbus replay URL [--from-seq N] [--to-seq N] [--type NAME ...] [--progress/--no-progress]
eventbus export URL [-o FILE] [--from-seq N] [--to-seq N] [--type NAME ...]
eventbus tail URL [--from-seq N] [--type NAME ...] [--limit N]
eventbus stats URL
eventbus dlq list URL [--subscription NAME]
eventbus dlq purge URL [--id UUID ...] [--subscription NAME]
eventbus dlq redrive URL --app module:create_bus [--id UUID ...]
```

The tools read stored JSON as it is, so they work on a store whose event
classes they cannot import. Only ``dlq redrive`` needs the application: it
calls the handlers again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

import anyio

from ..exceptions import EventBusError
from . import deadletters, history
from .demo import DEFAULT_DEMO_STORE, run_demo
from .stats import store_stats

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], Awaitable[int]] = args.command
    try:
        return anyio.run(command, args)
    except KeyboardInterrupt:
        return 130
    except (EventBusError, ValueError) as exc:
        print(f"eventbus: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


async def _demo(args: argparse.Namespace) -> int:
    await run_demo(args.store, out=sys.stdout)
    return 0


async def _replay(args: argparse.Namespace) -> int:
    await history.replay(args.url, output=sys.stdout, **_range(args), progress=args.progress)
    return 0


async def _export(args: argparse.Namespace) -> int:
    if args.output == "-":
        await history.export(args.url, output=sys.stdout, **_range(args), progress=args.progress)
        return 0
    # The export is the command's only work, so nothing else waits on the loop while the file opens.
    with open(args.output, "w", encoding="utf-8") as output:  # noqa: ASYNC230
        written = await history.export(args.url, output=output, **_range(args), progress=args.progress)
    print(f"exported {written} records to {args.output}", file=sys.stderr)
    return 0


async def _tail(args: argparse.Namespace) -> int:
    await history.tail(args.url, output=sys.stdout, from_seq=args.from_seq, types=args.types, limit=args.limit)
    return 0


async def _stats(args: argparse.Namespace) -> int:
    print(json.dumps(await store_stats(args.url), indent=2))
    return 0


async def _dlq_list(args: argparse.Namespace) -> int:
    await deadletters.list_letters(args.url, output=sys.stdout, subscription=args.subscription)
    return 0


async def _dlq_purge(args: argparse.Namespace) -> int:
    purged = await deadletters.purge(args.url, ids=args.ids, subscription=args.subscription)
    print(f"purged {purged} dead letters", file=sys.stderr)
    return 0


async def _dlq_redrive(args: argparse.Namespace) -> int:
    succeeded, left = await deadletters.redrive(args.url, app=args.app, ids=args.ids)
    print(f"redrove {succeeded} dead letters; {left} left", file=sys.stderr)
    return 0 if not left else 2


def _range(args: argparse.Namespace) -> dict[str, Any]:
    return {"from_seq": args.from_seq, "to_seq": args.to_seq, "types": args.types}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventbus", description="A typed event bus: the demo and store tools.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="a guided tour on a SQLite file")
    demo.add_argument("--store", default=DEFAULT_DEMO_STORE, help=f"store URL (default: {DEFAULT_DEMO_STORE})")
    demo.set_defaults(command=_demo)

    def add_range(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("url", help="store URL, e.g. sqlite:///events.db")
        sub.add_argument("--from-seq", type=_positive, default=1)
        sub.add_argument("--to-seq", type=_positive, default=None)
        sub.add_argument("--type", dest="types", action="append", default=[], help="type name (repeatable)")
        sub.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="progress bar on stderr (default: when stderr is a terminal)",
        )

    replay = commands.add_parser("replay", help="print stored records for people to read")
    add_range(replay)
    replay.set_defaults(command=_replay)

    export = commands.add_parser("export", help="write stored records as JSON lines")
    add_range(export)
    export.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    export.set_defaults(command=_export)

    tail = commands.add_parser("tail", help="follow new records as JSON lines")
    tail.add_argument("url")
    tail.add_argument("--from-seq", type=_positive, default=None, help="start here (default: after the head)")
    tail.add_argument("--type", dest="types", action="append", default=[])
    tail.add_argument("--limit", type=_positive, default=None, help="stop after this many records")
    tail.set_defaults(command=_tail)

    stats = commands.add_parser("stats", help="head, durable positions and dead letters as JSON")
    stats.add_argument("url")
    stats.set_defaults(command=_stats)

    dlq = commands.add_parser("dlq", help="dead letters: list, purge, redrive")
    dlq_commands = dlq.add_subparsers(required=True, metavar="ACTION")
    dlq_list = dlq_commands.add_parser("list", help="dead letters as JSON lines")
    dlq_list.add_argument("url")
    dlq_list.add_argument("--subscription")
    dlq_list.set_defaults(command=_dlq_list)
    dlq_purge = dlq_commands.add_parser("purge", help="delete dead letters")
    dlq_purge.add_argument("url")
    dlq_purge.add_argument("--id", dest="ids", type=UUID, action="append", default=[])
    dlq_purge.add_argument("--subscription")
    dlq_purge.set_defaults(command=_dlq_purge)
    dlq_redrive = dlq_commands.add_parser("redrive", help="deliver dead letters again through the app's handlers")
    dlq_redrive.add_argument("url")
    dlq_redrive.add_argument("--app", required=True, help="module:function taking a store URL, returning the EventBus")
    dlq_redrive.add_argument("--id", dest="ids", type=UUID, action="append", default=[])
    dlq_redrive.set_defaults(command=_dlq_redrive)
    return parser
