"""Reading a ``sqlite://`` store URL, SQLAlchemy's way.

``sqlite:///events.db`` is a path relative to the working directory and
``sqlite:////var/lib/app/events.db`` an absolute one: after ``sqlite://``
comes an empty host, then ``/``, then the path. Options ride in the query
string (``?synchronous=normal``). In-memory databases are refused: the store
keeps a writer and reader connections, which only a file can share, and
``memory://`` is the in-memory store.

The path is percent-decoded, so a file name may hold what a URL cannot
carry as is (``with%20space.db``, ``caf%C3%A9.db``), but an escape never
moves the file to another directory: an escaped separator (``%2F``,
``%5C``) and a ``.`` or ``..`` segment spelled with escapes (``%2e%2e``)
are refused, since the file would not be where the URL appears to put it.
A ``..`` written as is stays what it says.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote

from ._options import SqliteOptions

__all__ = ["parse_url"]

_FORMS = "sqlite:///relative/path.db or sqlite:////absolute/path.db"
_MEMORY = ("", ":memory:")


def parse_url(url: str) -> tuple[Path, SqliteOptions]:
    """The database path and the options a ``sqlite://`` URL names.

    Raises `ValueError` naming the URL when it is not one.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() != "sqlite":
        raise ValueError(f"not a SQLite store URL: {url!r}; expected {_FORMS}")
    location, _, query = rest.partition("?")
    if location in _MEMORY or location == "/:memory:":
        raise ValueError(
            f"{url!r} names an in-memory SQLite database, which this store does not support: "
            "use memory:// for an in-memory store, or a file path"
        )
    if not location.startswith("/"):
        host = location.split("/", 1)[0]
        raise ValueError(f"{url!r} names the host {host!r}, but a SQLite URL has none; use {_FORMS}")
    path = _literal_path(url, location[1:])
    if not path or path.endswith("/"):
        raise ValueError(f"{url!r} names no database file; use {_FORMS}")
    if "\x00" in path:
        raise ValueError(f"{url!r} names a file path holding a NUL character, which no file name can hold")
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise ValueError(f"cannot read the options of {url!r}: {query!r}") from None
    try:
        options = SqliteOptions.from_strings(params)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    return Path(path), options


def _literal_path(url: str, written: str) -> str:
    """``written`` percent-decoded, segment by segment; `ValueError` naming ``url`` for an
    escape that would change the directory (see the module docstring)."""
    segments = []
    for raw in written.split("/"):
        segment = unquote(raw)
        if "/" in segment or segment.count("\\") > raw.count("\\"):
            raise ValueError(
                f"{url!r} escapes a path separator ({raw!r} decodes to {segment!r}): the file would not be "
                "where the URL appears to put it; write separators as they are"
            )
        if segment != raw and segment in (".", ".."):
            raise ValueError(
                f"{url!r} spells the path segment {segment!r} with escapes ({raw!r}): the file would not be "
                f"where the URL appears to put it; write {segment!r} as it is, if you mean it"
            )
        segments.append(segment)
    return "/".join(segments)
