"""The ``eventbus`` command: the demo, and tools that work on any store by URL.

```
eventbus [--version] [--help]
eventbus demo [--store URL]
eventbus replay URL [--from-seq N] [--to-seq N] [--type NAME ...] [--json]
eventbus export URL [-o FILE] [--from-seq N] [--to-seq N] [--type NAME ...]
eventbus tail URL [--from-seq N] [--type NAME ...] [--limit N] [--json]
eventbus stats URL [--json]
eventbus trace URL ID [--json]
eventbus dlq list URL [--subscription NAME] [--json]
eventbus dlq purge URL [--id UUID ...] [--subscription NAME] [--yes]
eventbus dlq redrive URL --app module:create_bus [--id UUID ...]
eventbus catalog --app module:attribute [--format json|markdown|asyncapi] [-o FILE]
```

Built on Click and Rich, which come with the ``cli`` extra
(``pip install 'eventbus[cli]'``). The store tools read stored JSON as it is,
so they work on a store whose event classes they cannot import; ``dlq
redrive`` and ``catalog`` import the application.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._version import VERSION_LINE

__all__ = ["main"]

_EXTRA_LIBRARIES = frozenset({"click", "rich"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Without the ``cli`` extra, ``--version`` still prints the version, and
    anything else says which extra to install.
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        from ._app import cli
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in _EXTRA_LIBRARIES:
            raise
        if args == ["--version"]:
            print(VERSION_LINE)
            return 0
        print(
            f"eventbus: the command line needs the 'cli' extra ({missing} is not installed): "
            "pip install 'eventbus[cli]'",
            file=sys.stderr,
        )
        return 1
    try:
        cli.main(args=args, prog_name="eventbus")
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
    return 0
