"""``--app module:attribute``: finding the application's bus."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from ..bus import EventBus
from ..event import Event

__all__ = ["load_bus"]


def load_bus(app: str, url: str, *, instance_ok: bool = False) -> EventBus:
    """The application's bus that ``app`` (``"module:attribute"``) names.

    The attribute is a function taking a store URL and returning the bus
    (as Flask's ``create_app``), which is called with ``url``; with
    ``instance_ok`` it may also be the `EventBus` itself (whatever its store).
    Raises `ValueError` naming what is wrong: a module that cannot be
    imported, a missing attribute, or an attribute of the wrong kind (a
    class, an async function, an ASGI app, a function that does not take
    one argument), each checked before anything is called.
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
    wanted = (
        "an EventBus or a function taking a store URL and returning one"
        if instance_ok
        else "a function taking a store URL and returning an EventBus"
    )
    if not hasattr(module, attribute):
        raise ValueError(f"--app {app!r}: module {module_name!r} has no attribute {attribute!r}; expected {wanted}")
    target = getattr(module, attribute)
    if isinstance(target, EventBus):
        if instance_ok:
            return target
        raise ValueError(
            f"--app {app!r} is an EventBus; this command builds the bus on its store URL: expected {wanted}"
        )
    problem = _why_not_a_factory(target)
    if problem is not None:
        raise ValueError(f"--app {app!r} is {problem}; expected {wanted}")
    bus = target(url)
    if not isinstance(bus, EventBus):
        if inspect.iscoroutine(bus):
            bus.close()  # never awaited, on purpose: say so instead of a RuntimeWarning
        raise ValueError(f"--app {app!r} returned {type(bus).__name__}, not an EventBus")
    return bus


def _why_not_a_factory(target: Any) -> str | None:
    """What ``target`` is, when it cannot be called as ``target(url)`` to build a bus; None when it can."""
    if isinstance(target, type):
        kind = "event class" if issubclass(target, Event) else "class"
        return f"the {kind} {target.__qualname__}, not a function"
    if not callable(target):
        return f"a value of type {type(target).__name__}, not a function"
    if inspect.iscoroutinefunction(target):
        return "an async function, not a plain one"
    if inspect.iscoroutinefunction(type(target).__call__):
        return f"a {type(target).__name__} object (an async callable, such as an ASGI app), not a function"
    try:
        inspect.signature(target).bind("url")
    except TypeError:
        return f"a function that cannot be called with a store URL alone {inspect.signature(target)}"
    except ValueError:  # no signature to check (some builtins): calling it will tell
        return None
    return None
