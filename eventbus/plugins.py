"""Bus plugins: code that takes part in a bus's lifecycle and middleware.

A plugin is handed to ``EventBus(plugins=[...])`` as an object, or by the
name it registers under the ``eventbus.plugins`` entry point group. Its
middleware joins the bus's own (after it), its ``start`` runs once the store
is open and before the subscriptions start, and its ``stop`` runs after they
have drained, in reverse order.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from .exceptions import PluginError
from .middleware.base import Middleware, PublishMiddleware

if TYPE_CHECKING:
    from .bus import EventBus

__all__ = ["ENTRY_POINT_GROUP", "Plugin", "load_plugin"]

ENTRY_POINT_GROUP = "eventbus.plugins"


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

    async def start(self, bus: EventBus) -> None:
        """Called when the bus starts, after the store is open."""

    async def stop(self, bus: EventBus) -> None:
        """Called when the bus closes, after the subscriptions have stopped."""


def load_plugin(spec: Plugin | str) -> Plugin:
    """A plugin object from an object or an ``eventbus.plugins`` entry point name."""
    if isinstance(spec, Plugin):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"plugins must be Plugin instances or entry point names, got {spec!r}")
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == spec:
            try:
                loaded = entry_point.load()
                plugin = loaded() if isinstance(loaded, type) else loaded
            except Exception as exc:
                raise PluginError(f"plugin {spec!r} ({entry_point.value}) failed to load: {exc!r}") from exc
            if not isinstance(plugin, Plugin):
                raise PluginError(f"entry point {spec!r} ({entry_point.value}) is not an eventbus Plugin")
            return plugin
    raise PluginError(f"no plugin named {spec!r} is installed (entry point group {ENTRY_POINT_GROUP!r})")
