"""The record whose handler is running, so that publishing from inside a
handler can set causation and correlation ids without the user passing them."""

from __future__ import annotations

from contextvars import ContextVar

from .record import Record

current_record: ContextVar[Record | None] = ContextVar("eventbus_current_record", default=None)
