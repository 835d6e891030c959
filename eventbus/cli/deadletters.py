"""``eventbus dlq list|redrive|purge``: dead letters in a store."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO
from uuid import UUID

from ..bus import EventBus
from ._common import dead_letter_to_json, opened_store

__all__ = ["list_letters", "load_bus", "purge", "redrive"]


async def list_letters(url: str, *, output: TextIO, subscription: str | None = None) -> int:
    """Write the dead letters as JSON lines; returns how many."""
    async with opened_store(url) as store:
        letters = await store.dead_letters(subscription)
    for letter in letters:
        output.write(json.dumps(dead_letter_to_json(letter)) + "\n")
    return len(letters)


async def purge(url: str, *, ids: Sequence[UUID] = (), subscription: str | None = None) -> int:
    """Delete the named letters, or all of ``subscription``'s, or all; returns how many."""
    async with opened_store(url) as store:
        if not ids:
            ids = [letter.id for letter in await store.dead_letters(subscription)]
        return await store.delete_dead_letters(ids)


async def redrive(url: str, *, app: str, ids: Sequence[UUID] = ()) -> tuple[int, int]:
    """Deliver letters again through the handlers of the application's bus.

    ``app`` is ``"module:factory"``: a function taking a store URL and
    returning the application's `EventBus` with its subscriptions (the
    handlers to call), as Flask's ``create_app``. Returns (succeeded, letters left).
    """
    bus = load_bus(app, url)
    async with bus:
        succeeded = await bus.dead_letters.redrive(ids or None)
        left = len(await bus.dead_letters.list())
    return succeeded, left


def load_bus(app: str, url: str) -> EventBus:
    """Import ``module:factory`` and call it with ``url`` to get the application's bus."""
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
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"{app!r} is not a function taking a store URL and returning an EventBus")
    bus = factory(url)
    if not isinstance(bus, EventBus):
        raise ValueError(f"{app!r} returned {type(bus).__name__}, not an EventBus")
    return bus
