"""`PostgresOptions`, and splitting a store URL into asyncpg's DSN and those options.

A URL such as ``postgresql://app@db:5432/events?schema=billing&max_pool_size=4``
carries the store's own options in its query string, so that
``EventBus(store="postgresql://...")`` can set them too; every other query
parameter (``sslmode=``, server settings) goes to asyncpg unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from eventbus.exceptions import StoreError
from eventbus.store import RETENTION_QUERY_KEYS, Retention, redact_url

__all__ = [
    "DEFAULT_APPLICATION_NAME",
    "DEFAULT_SCHEMA",
    "LISTENER_SUFFIX",
    "SCHEMES",
    "PostgresOptions",
    "PostgresUrl",
]

SCHEMES = frozenset({"postgresql", "postgres"})
"""URL schemes the store accepts (a ``+driver`` suffix such as ``+asyncpg`` is ignored)."""

DEFAULT_SCHEMA = "eventbus"
"""The PostgreSQL schema the store's tables live in unless ``schema=`` says otherwise."""

DEFAULT_APPLICATION_NAME = "eventbus-postgres"
"""The ``application_name`` of the store's connections unless the URL gives one."""

LISTENER_SUFFIX = " (listen)"
"""Added to the ``application_name`` of the connection that waits for appends."""

_MAX_SCHEMA_LENGTH = 48
_SCHEMA_NAME = re.compile(rf"[a-z_][a-z0-9_]{{0,{_MAX_SCHEMA_LENGTH - 1}}}")


@dataclass(frozen=True)
class PostgresOptions:
    """Settings of a `PostgresStore`, validated when built.

    Attributes:
        schema: the PostgreSQL schema that holds the store's tables (created on
            first use). Lower-case letters, digits and ``_``, at most 48
            characters, not starting with ``pg_``. One schema is one store:
            give each service, or each test, its own.
        min_pool_size / max_pool_size: bounds of the asyncpg connection pool.
            Waiting for appends uses one more, dedicated connection.
        connect_timeout: seconds to wait for a connection before failing.
        outcome_timeout: seconds an append whose connection was lost while
            it committed may spend finding out whether it was stored before
            it raises `PublishOutcomeUnknown`.
        lock_timeout: seconds a statement of the store may wait for a lock
            (PostgreSQL's ``lock_timeout``) before it fails with `StoreError`.
            An append waits for the seq counter's lock while an application
            transaction that published (``transaction=conn``) is open; when
            that transaction waits for the append in turn, in a way the bus
            cannot see, this turns the deadlock into an error.
        retention: how much history to keep (a `Retention`; given as an int
            it is a count, as a `timedelta` an age); ``None`` keeps
            everything. In a URL: ``?keep=1000000&keep_age=30d``.
    """

    schema: str = DEFAULT_SCHEMA
    min_pool_size: int = 1
    max_pool_size: int = 10
    connect_timeout: float = 10.0
    outcome_timeout: float = 10.0
    lock_timeout: float = 60.0
    retention: Retention | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "retention", Retention.of(self.retention))
        if not isinstance(self.schema, str) or not _SCHEMA_NAME.fullmatch(self.schema):
            raise ValueError(
                f"schema must be lower-case letters, digits and '_' (at most {_MAX_SCHEMA_LENGTH}, "
                f"not starting with a digit), got {self.schema!r}"
            )
        if self.schema.startswith("pg_"):
            raise ValueError(f"schema names starting with 'pg_' are reserved by PostgreSQL, got {self.schema!r}")
        for name in ("min_pool_size", "max_pool_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.min_pool_size > self.max_pool_size:
            raise ValueError(
                f"min_pool_size ({self.min_pool_size}) must not exceed max_pool_size ({self.max_pool_size})"
            )
        for name in ("connect_timeout", "outcome_timeout", "lock_timeout"):
            timeout = getattr(self, name)
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
                raise ValueError(f"{name} must be a number of seconds > 0, got {timeout!r}")

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> PostgresOptions:
        """Options from a URL's query values (text); defaults for the rest."""
        converted: dict[str, Any] = {"retention": Retention.from_query(query)}
        for field in dataclasses.fields(cls):
            if field.name in query and field.name != "retention":
                convert: Callable[[str], Any] = type(field.default)
                text = query[field.name]
                try:
                    converted[field.name] = convert(text)
                except ValueError:
                    raise ValueError(f"{field.name} must be a {convert.__name__}, got {text!r}") from None
        return cls(**converted)


@dataclass(frozen=True)
class PostgresUrl:
    """A store URL taken apart.

    Attributes:
        dsn: what asyncpg connects to (the URL without the store's options);
            it may hold a password, so it is left out of the repr.
        display: the URL with any password replaced by ``***`` (through
            `eventbus.store.url.redact_url`), for messages.
        query: the store's options found in the query string, as text.
        application_name: what the store's connections call themselves in
            ``pg_stat_activity`` (the URL's ``application_name=``, or
            ``eventbus-postgres``); the listening connection adds `LISTENER_SUFFIX`.
    """

    dsn: str = dataclasses.field(repr=False)
    display: str
    query: Mapping[str, str]
    application_name: str = DEFAULT_APPLICATION_NAME

    @classmethod
    def parse(cls, url: str) -> PostgresUrl:
        """Split ``url``; raises `StoreError` naming it when it is not a PostgreSQL URL."""
        if not isinstance(url, str):
            raise TypeError(f"a PostgreSQL URL must be a str, got {type(url).__name__}")
        display = redact_url(url)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  # a port out of range is a ValueError here, not an OverflowError at connect
        except ValueError as exc:
            raise StoreError(f"not a PostgreSQL URL: {display!r}: {redact_url(str(exc))}") from None
        if parts.scheme.partition("+")[0].lower() not in SCHEMES:
            raise StoreError(f"not a PostgreSQL URL (expected postgresql://user@host:5432/database): {display!r}")
        option_names = {field.name for field in dataclasses.fields(PostgresOptions)} - {"retention"}
        option_names.update(RETENTION_QUERY_KEYS)
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        application_name = DEFAULT_APPLICATION_NAME
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in option_names:
                ours[key] = value
            elif key == "application_name":
                application_name = value
            else:
                theirs.append((key, value))
        dsn = urlunsplit(
            ("postgresql", _encoded_user_info(parts.netloc), parts.path, urlencode(theirs), parts.fragment)
        )
        return cls(dsn=dsn, display=display, query=ours, application_name=application_name)


def _encoded_user_info(netloc: str) -> str:
    """``netloc`` with user and password percent-encoded, so a password holding
    an unencoded ``@`` or ``:`` reaches the server whole (the user info ends at the last ``@``)."""
    user_info, at, host = netloc.rpartition("@")
    if not at:
        return netloc
    user, colon, password = user_info.partition(":")
    encoded = quote(unquote(user), safe="")
    if colon:
        encoded += ":" + quote(unquote(password), safe="")
    return f"{encoded}@{host}"
