"""`Plugin`: the base class of bus plugins, code that takes part in a bus's
lifecycle and middleware.

A plugin is handed to ``EventBus(plugins=[...])`` as an object, or by the
name it registers under the ``eventbus.plugins`` entry point group. Its
middleware joins the bus's own (after it), its ``start`` runs once the store
is open and before the subscriptions start, and its ``stop`` runs after they
have stopped, in reverse order. If a plugin fails to start, the plugins
started before it are stopped (in reverse order), the store is closed, and
the error propagates from ``async with bus``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .bus import EventBus
from .middleware.base import Middleware, PublishMiddleware
from .plugin_loading import ENTRY_POINT_GROUP

__all__ = ["ENTRY_POINT_GROUP", "Plugin"]


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

    async def stop(self, bus: EventBus, /) -> None:
        """Called when the bus stops, after the subscriptions have stopped."""
