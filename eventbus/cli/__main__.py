"""``python -m eventbus.cli``: the same as the ``eventbus`` command."""

from . import main

raise SystemExit(main())
