"""What the commands share: opening a store by URL, records as JSON, progress."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TextIO

from ..deadletter import DeadLetter
from ..exceptions import EventDecodeError
from ..record import Record
from ..store.base import Store
from ..store.codec import UnreadableRecord
from ..store.url import store_from_url

__all__ = ["Progress", "dead_letter_to_json", "opened_store", "record_to_json"]


@asynccontextmanager
async def opened_store(url: str) -> AsyncIterator[Store]:
    """The store a URL names, opened for the duration of the block."""
    store = store_from_url(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def record_to_json(record: Record) -> dict[str, Any]:
    """A record as one JSON object, without needing its event class.

    The payload is the stored JSON itself, so a tool can export a store whose
    event classes it cannot import. A stored row that cannot be read raises
    `EventDecodeError` naming its seq.
    """
    if isinstance(record, UnreadableRecord):
        raise record.error()
    try:
        data = json.loads(record.data)
    except ValueError as exc:
        raise EventDecodeError(
            f"stored record seq {record.seq} of type {record.type!r}: its data is not JSON ({exc})",
            seq=record.seq,
            type=record.type,
        ) from None
    return {
        "seq": record.seq,
        "type": record.type,
        "version": record.version,
        "event_id": str(record.event_id),
        "recorded_at": record.recorded_at.isoformat(),
        "correlation_id": str(record.correlation_id),
        "causation_id": None if record.causation_id is None else str(record.causation_id),
        "headers": dict(record.headers),
        "data": data,
    }


def dead_letter_to_json(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as one JSON object (its record as in `record_to_json`)."""
    return {
        "id": str(letter.id),
        "subscription": letter.subscription,
        "attempts": letter.attempts,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "first_failed_at": letter.first_failed_at.isoformat(),
        "last_failed_at": letter.last_failed_at.isoformat(),
        "traceback": letter.traceback,
        "record": record_to_json(letter.record),
    }


class Progress:
    """A one-line progress bar on stderr for long work, drawn only on a terminal.

    Redrawn at most ten times a second, so it costs nothing per record.
    """

    _WIDTH = 30
    _INTERVAL = 0.1

    def __init__(self, total: int, *, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._total = max(total, 1)
        self._label = label
        self._done = 0
        self._started = time.monotonic()
        self._drawn_at = 0.0

    def advance(self, count: int = 1) -> None:
        self._done += count
        if self._enabled and time.monotonic() - self._drawn_at >= self._INTERVAL:
            self._draw()

    def close(self) -> None:
        if self._enabled:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self) -> None:
        self._drawn_at = time.monotonic()
        fraction = min(self._done / self._total, 1.0)
        filled = int(fraction * self._WIDTH)
        rate = self._done / max(self._drawn_at - self._started, 1e-9)
        bar = "#" * filled + "-" * (self._WIDTH - filled)
        self._stream.write(f"\r{self._label} [{bar}] {self._done}/{self._total} ({rate:,.0f}/s)")
        self._stream.flush()
