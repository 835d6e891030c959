"""Starting the service processes of the NATS tests and reading what they print."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.child_process import expect, read_line, running

__all__ = ["expect", "read_line", "service"]

_SERVICE = Path(__file__).with_name("nats_service.py")


def service(*args: str) -> AbstractAsyncContextManager[tuple[Process, BufferedByteReceiveStream]]:
    """``nats_service.py args...`` running, with a reader of its stdout; killed if still running at exit."""
    return running(_SERVICE, *args)
