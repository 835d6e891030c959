"""`SqliteOptions`: the knobs of a SQLite store, validated once at construction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal, cast, get_args

from eventbus.store import RETENTION_QUERY_KEYS, Retention

__all__ = ["SqliteOptions", "Synchronous"]

Synchronous = Literal["full", "extra", "normal"]
"""SQLite's ``PRAGMA synchronous`` levels that keep every committed append across a process crash."""


@dataclass(frozen=True)
class SqliteOptions:
    """How a `SqliteStore` trades durability, waiting and latency.

    Attributes:
        synchronous: ``"full"`` (default) fsyncs the write-ahead log on every
            commit, so an acknowledged append survives a power cut as well as
            ``kill -9``. ``"normal"`` skips that fsync: still safe against a
            crashed process and never corrupt, but the last commits may roll
            back after a power loss or an OS crash. ``"extra"`` also syncs the
            directory. ``"off"`` is not offered.
        busy_timeout: seconds to wait for another process's write lock on the
            same file before an append fails with `StoreError`.
        poll_interval: seconds between two looks at the file while
            `SqliteStore.wait_for_append` waits for another process's appends
            (this process's own appends wake it at once).
        retention: how much history to keep (a `Retention`; given as an int
            it is a count, as a `timedelta` an age); ``None`` keeps
            everything. The store compacts in the background while it is open.

    Each option can also be given in the store URL:
    ``sqlite:///events.db?synchronous=normal&busy_timeout=10``, and the
    retention as ``?keep=1000000&keep_age=30d&compact_interval=1``.
    """

    synchronous: Synchronous = "full"
    busy_timeout: float = 5.0
    poll_interval: float = 0.05
    retention: Retention | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "retention", Retention.of(self.retention))
        if self.synchronous not in get_args(Synchronous):
            allowed = ", ".join(repr(level) for level in get_args(Synchronous))
            raise ValueError(f"synchronous must be one of {allowed}, got {self.synchronous!r}")
        for name in ("busy_timeout", "poll_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> SqliteOptions:
        """Options from text, as a URL's query string carries them."""
        known = [field.name for field in fields(cls) if field.name != "retention"] + list(RETENTION_QUERY_KEYS)
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown SQLite store option {unknown[0]!r} (known: {', '.join(known)})")
        default = cls()
        return cls(
            synchronous=cast(Synchronous, values.get("synchronous", default.synchronous).lower()),
            busy_timeout=_seconds(values, "busy_timeout", default.busy_timeout),
            poll_interval=_seconds(values, "poll_interval", default.poll_interval),
            retention=Retention.from_query(values),
        )


def _seconds(values: Mapping[str, str], name: str, default: float) -> float:
    text = values.get(name)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {text!r}") from None
