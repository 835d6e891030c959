"""Turning a store URL such as ``sqlite:///events.db`` into a `Store`.

Stores other than memory live in plugin distributions that register a
factory under the ``eventbus.stores`` entry point group, keyed by URL scheme.
The core never imports a plugin; it asks the entry points.
"""

from __future__ import annotations

import difflib
import re
from importlib.metadata import entry_points
from typing import Any, Protocol, cast

from ..exceptions import StoreError, StoreNotFound
from .base import Store
from .memory import MemoryStore

__all__ = ["ENTRY_POINT_GROUP", "REDACTED", "StoreFactory", "open_store", "redact_url", "store_from_url"]

ENTRY_POINT_GROUP = "eventbus.stores"
"""The entry point group in which a store plugin registers its `StoreFactory` under a URL scheme."""

REDACTED = "***"
"""What `redact_url` puts where a password was."""

_SECRET_PARAMETER = re.compile(r"(?i)\b((?:ssl)?password|passwd|pwd)=[^&#\s]*")

_PLUGIN_FOR_SCHEME = {
    "sqlite": "eventbus-sqlite",
    "postgresql": "eventbus-postgres",
    "postgres": "eventbus-postgres",
}


class StoreFactory(Protocol):
    """What an ``eventbus.stores`` entry point names: an object (usually the
    store class) whose ``from_url`` builds a store from the URL and keyword
    options.

    A factory that accepts ``create=False`` (open only an existing store,
    never create one) lets read-only tools such as ``eventbus stats`` use it.
    """

    def from_url(self, url: str, **options: Any) -> Store: ...


def redact_url(url: str) -> str:
    """``url`` with every password replaced by ``***``, fit for messages, logs and output.

    Hides the password of the user info (``postgresql://app:secret@db/events``,
    also when the password holds an unencoded ``@``, ``:``, ``/`` or ``?``:
    the user info ends at the last ``@`` before the query, or the last of all) and the value of
    ``password=``, ``sslpassword=``, ``passwd=`` or ``pwd=`` parameters (in a
    query string or a ``key=value`` connection string). Every store's repr
    and errors and every command of the CLI show URLs through it.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        at = rest.split("?", 1)[0].rfind("@")
        if at == -1:  # a password holding "?" cuts the user info short: hide up to the last "@"
            at = rest.rfind("@")
        colon = rest.find(":", 0, at)
        if at != -1 and colon != -1:
            rest = f"{rest[: colon + 1]}{REDACTED}{rest[at:]}"
        url = f"{scheme}{sep}{rest}"
    return _SECRET_PARAMETER.sub(rf"\1={REDACTED}", url)


def store_from_url(url: str, *, create: bool = True, **options: Any) -> Store:
    """Create (not yet open) the store a URL names.

    ``memory://`` is built in; any other scheme is looked up among installed
    plugins. Raises `StoreNotFound` naming the distribution to install, or
    the known scheme a misspelt one is close to (``sqllite`` → ``sqlite``).
    A file path given instead of a URL (``events.db``) is a `ValueError`
    suggesting its SQLite URL (``sqlite:///events.db``).

    ``create=False`` asks for a store that opens only if it exists already:
    its ``open()`` raises `StoreError` naming the missing file or schema
    instead of creating it. A memory store always starts empty, so it does
    not apply there; a plugin whose factory does not take ``create`` is a
    `StoreError`.
    """
    if not isinstance(url, str):
        raise TypeError(f"a store URL must be a str, got {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ValueError(f"not a store URL (expected scheme://...): {redact_url(url)!r}{_path_hint(url)}")
    scheme = scheme.split("+", 1)[0].lower()
    if scheme == "memory":
        return MemoryStore()
    installed = entry_points(group=ENTRY_POINT_GROUP)
    for entry_point in installed:
        if entry_point.name == scheme:
            factory = cast(StoreFactory, entry_point.load())
            if create:
                return factory.from_url(url, **options)
            try:
                return factory.from_url(url, create=False, **options)
            except TypeError as exc:
                if "create" not in str(exc):
                    raise
                raise StoreError(
                    f"the {scheme!r} store cannot be opened without creating it ({redact_url(url)!r}): "
                    f"its factory {entry_point.value} takes no create= option"
                ) from exc
    plugin = _PLUGIN_FOR_SCHEME.get(scheme)
    if plugin:
        hint = f"; install the {plugin!r} distribution"
    else:
        known = {"memory", *_PLUGIN_FOR_SCHEME, *installed.names}
        close = difflib.get_close_matches(scheme, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
    raise StoreNotFound(f"no store is installed for the URL scheme {scheme!r} in {redact_url(url)!r}{hint}")


def _path_hint(text: str) -> str:
    """For what looks like a file path given instead of a URL, the SQLite URL that names it."""
    if not text or any(char.isspace() for char in text) or ":" in text:
        return ""
    return f"; for the SQLite file {text!r}, use 'sqlite:///{text}'"


def open_store(store: Store | str | None) -> Store:
    """A `Store` from what `EventBus` accepts: a store, a URL, or None (memory)."""
    if store is None:
        return MemoryStore()
    if isinstance(store, str):
        return store_from_url(store)
    if not isinstance(store, Store):
        raise TypeError(f"store must be a Store, a store URL or None, got {type(store).__name__}")
    return store
