"""``--app module:attribute``: finding the application's bus."""

from __future__ import annotations

import importlib
import os
import sys

from ..bus import EventBus

__all__ = ["load_bus"]


def load_bus(app: str, url: str, *, instance_ok: bool = False) -> EventBus:
    """The application's bus that ``app`` (``"module:attribute"``) names.

    The attribute is a function taking a store URL and returning the bus
    (as Flask's ``create_app``), which is called with ``url``; with
    ``instance_ok`` it may also be the `EventBus` itself (whatever its store).
    Raises `ValueError` naming what is wrong.
    """
    module_name, sep, attribute = app.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--app must look like 'package.module:create_bus', got {app!r}")
    # a console script's sys.path lacks the working directory that `python -m` would have
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--app {app!r}: cannot import {module_name!r} ({exc})") from exc
    target = getattr(module, attribute, None)
    if isinstance(target, EventBus) and instance_ok:
        return target
    if not callable(target) or isinstance(target, EventBus):
        wanted = "an EventBus nor a function" if instance_ok else "a function"
        raise ValueError(f"{app!r} is not {wanted} taking a store URL and returning an EventBus")
    bus = target(url)
    if not isinstance(bus, EventBus):
        raise ValueError(f"{app!r} returned {type(bus).__name__}, not an EventBus")
    return bus
