"""What the bus asks of a plugin (`BusPlugin`), and finding one by the name it
registers under the ``eventbus.plugins`` entry point group.

The bus only needs this much; `eventbus.plugins.Plugin` is the base class
plugin authors subclass, typed against `EventBus`.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from .exceptions import PluginError
from .middleware.base import Middleware, PublishMiddleware

__all__ = ["BusPlugin", "ENTRY_POINT_GROUP", "load_plugin"]

ENTRY_POINT_GROUP = "eventbus.plugins"


@runtime_checkable
class BusPlugin(Protocol):
    """A plugin as the bus sees it (`eventbus.plugins.Plugin` implements it)."""

    @property
    def name(self) -> str:
        """How the plugin appears in logs and errors."""
        ...

    @property
    def middleware(self) -> Sequence[Middleware]:
        """Delivery middleware added to every subscription."""
        ...

    @property
    def publish_middleware(self) -> Sequence[PublishMiddleware]:
        """Middleware around every publish."""
        ...

    async def start(self, bus: Any, /) -> None:
        """Called when the bus starts, after the store is open."""

    async def run(self, bus: Any, /) -> None:
        """The plugin's own work while the bus runs (see `eventbus.plugins.Plugin.run`)."""

    async def stop(self, bus: Any, /) -> None:
        """Called when the bus stops, after the subscriptions have stopped."""


def load_plugin(spec: BusPlugin | str) -> BusPlugin:
    """A plugin object from an object or an ``eventbus.plugins`` entry point name."""
    if isinstance(spec, str):
        return _from_entry_point(spec)
    if not isinstance(spec, BusPlugin):
        raise TypeError(f"plugins must be Plugin instances or entry point names, got {spec!r}")
    return spec


def _from_entry_point(name: str) -> BusPlugin:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == name:
            try:
                loaded = entry_point.load()
                plugin = loaded() if isinstance(loaded, type) else loaded
            except Exception as exc:
                raise PluginError(f"plugin {name!r} ({entry_point.value}) failed to load: {exc!r}") from exc
            if not isinstance(plugin, BusPlugin):
                raise PluginError(f"entry point {name!r} ({entry_point.value}) is not an eventbus Plugin")
            return plugin
    raise PluginError(f"no plugin named {name!r} is installed (entry point group {ENTRY_POINT_GROUP!r})")
