"""`Plugin`: the base class of bus plugins, code that takes part in a bus's
lifecycle and middleware, and finding one by the name it registers under
the ``eventbus.plugins`` entry point group.

A plugin is handed to ``EventBus(plugins=[...])`` as a `Plugin` instance,
or by the name it registers under the ``eventbus.plugins`` entry point
group (`load_plugin`). Its middleware joins the bus's own (after it), its
``start`` runs once the store is open and before the subscriptions start,
its ``run`` runs as a task of the bus while the bus runs, and its ``stop``
runs after the subscriptions have stopped, in reverse order. If a plugin
fails to start, the plugins started before it are stopped (in reverse
order), the store is closed, and the error propagates from
``async with bus``.

`Plugin` is both what the bus asks of a plugin and the class plugin authors
subclass, so it sits below `eventbus.bus` and cannot name `EventBus`: its
hooks take the bus as ``Any``. Annotate the parameter as `EventBus` in your
own hooks (``async def start(self, bus: EventBus) -> None``), which
type-checks under ``mypy --strict`` and pyright's strict mode.

Plugins (and stores) log through `logger`, the bus's own: quiet below
warning in an application that configured nothing, and routed through the
application's logging or structlog setup otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from importlib.metadata import entry_points
from typing import Any

import anyio

from ._log import Logger, logger
from .exceptions import PluginError
from .middleware.base import Middleware, PublishMiddleware

__all__ = ["ENTRY_POINT_GROUP", "Logger", "Plugin", "load_plugin", "logger", "run_plugins", "start_plugins"]

ENTRY_POINT_GROUP = "eventbus.plugins"
"""The entry point group under which distributions register bus plugins by name."""


class Plugin:
    """Base class of bus plugins; override what you need.

    The hooks are called with the `EventBus` that runs the plugin.

    Attributes:
        name: how the plugin appears in logs and errors.
        middleware: delivery middleware added to every subscription.
        publish_middleware: middleware around every publish.
    """

    name: str = "plugin"
    middleware: Sequence[Middleware] = ()
    publish_middleware: Sequence[PublishMiddleware] = ()

    async def start(self, bus: Any, /) -> None:
        """Called when the bus starts, after the store is open."""

    async def run(self, bus: Any, /) -> None:
        """The plugin's own work while the bus runs: a task started once the bus
        is running (publish and `EventBus.ingest` work), cancelled as soon as
        the bus begins to stop, before it drains, so nothing it brings in
        keeps a drain going. An exception it raises is logged, and the bus
        goes on without it. Returns at once by default."""

    async def stop(self, bus: Any, /) -> None:
        """Called when the bus stops, after the subscriptions have stopped."""


def load_plugin(spec: Plugin | str) -> Plugin:
    """A plugin from a `Plugin` instance or an ``eventbus.plugins`` entry point name.

    Raises:
        TypeError: ``spec`` is neither.
        PluginError: no plugin of that name is installed, it failed to load,
            or what it names is not a `Plugin` (or a subclass to instantiate).
    """
    if isinstance(spec, str):
        return _from_entry_point(spec)
    if not isinstance(spec, Plugin):
        raise TypeError(f"plugins must be Plugin instances or entry point names, got {spec!r}")
    return spec


def _from_entry_point(name: str) -> Plugin:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == name:
            try:
                loaded = entry_point.load()
                plugin = loaded() if isinstance(loaded, type) else loaded
            except Exception as exc:
                raise PluginError(f"plugin {name!r} ({entry_point.value}) failed to load: {exc!r}") from exc
            if not isinstance(plugin, Plugin):
                raise PluginError(f"entry point {name!r} ({entry_point.value}) is not an eventbus Plugin")
            return plugin
    raise PluginError(f"no plugin named {name!r} is installed (entry point group {ENTRY_POINT_GROUP!r})")


async def start_plugins(plugins: Sequence[Plugin], bus: Any, resources: AsyncExitStack) -> None:
    """Start ``plugins`` in order; each one started is stopped when ``resources``
    unwinds (in reverse order, shielded, a failure logged), so a plugin that
    fails to start leaves the ones before it stopped."""
    for plugin in plugins:
        await plugin.start(bus)
        resources.push_async_callback(_stop_plugin, plugin, bus)


async def run_plugins(plugins: Sequence[Plugin], bus: Any, until: anyio.Event) -> None:
    """Each plugin's `Plugin.run` as a task, until ``until`` is set: then they
    are cancelled. A plugin whose ``run`` fails is logged; the others go on."""
    async with anyio.create_task_group() as runs:
        for plugin in plugins:
            runs.start_soon(_run_plugin, plugin, bus)
        await until.wait()
        runs.cancel_scope.cancel()


async def _run_plugin(plugin: Plugin, bus: Any) -> None:
    try:
        await plugin.run(bus)
    except Exception as exc:
        logger.error("plugin failed while running; the bus goes on", plugin=plugin.name, error=repr(exc))


async def _stop_plugin(plugin: Plugin, bus: Any) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await plugin.stop(bus)
        except Exception as exc:
            logger.error("plugin failed to stop", plugin=plugin.name, error=repr(exc))
