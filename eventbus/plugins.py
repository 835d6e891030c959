"""`Plugin`: the base class of bus plugins, code that takes part in a bus's
lifecycle and middleware.

A plugin is handed to ``EventBus(plugins=[...])`` as an object, or by the
name it registers under the ``eventbus.plugins`` entry point group. Its
middleware joins the bus's own (after it), its ``start`` runs once the store
is open and before the subscriptions start, its ``run`` runs as a task of
the bus while the bus runs, and its ``stop`` runs after the subscriptions
have stopped, in reverse order. If a plugin fails to start, the plugins
started before it are stopped (in reverse order), the store is closed, and
the error propagates from ``async with bus``.

Plugins (and stores) log through `logger`, the bus's own: quiet below
warning in an application that configured nothing, and routed through the
application's logging or structlog setup otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._log import Logger, logger
from .bus import EventBus
from .middleware.base import Middleware, PublishMiddleware
from .plugin_loading import ENTRY_POINT_GROUP

__all__ = ["ENTRY_POINT_GROUP", "Logger", "Plugin", "logger"]


class Plugin:
    """Base class of bus plugins; override what you need.

    Attributes:
        name: how the plugin appears in logs and errors.
        middleware: delivery middleware added to every subscription.
        publish_middleware: middleware around every publish.
    """

    name: str = "plugin"
    middleware: Sequence[Middleware] = ()
    publish_middleware: Sequence[PublishMiddleware] = ()

    async def start(self, bus: EventBus, /) -> None:
        """Called when the bus starts, after the store is open."""

    async def run(self, bus: EventBus, /) -> None:
        """The plugin's own work while the bus runs: a task started once the bus
        is running (publish and `EventBus.ingest` work), cancelled as soon as
        the bus begins to stop, before it drains, so nothing it brings in
        keeps a drain going. An exception it raises is logged, and the bus
        goes on without it. Returns at once by default."""

    async def stop(self, bus: EventBus, /) -> None:
        """Called when the bus stops, after the subscriptions have stopped."""
