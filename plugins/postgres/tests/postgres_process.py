"""Starting the child processes of the PostgreSQL tests and reading what they print."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.child_process import read_line, running

__all__ = ["child", "read_line"]

_CHILD = Path(__file__).with_name("postgres_child.py")


def child(*args: str) -> AbstractAsyncContextManager[tuple[Process, BufferedByteReceiveStream]]:
    """``postgres_child.py args...`` running, with a reader of its stdout; killed if still running at exit."""
    return running(_CHILD, *args)
