"""Starting the child processes of the PostgreSQL tests and reading what they print."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

_CHILD = Path(__file__).with_name("postgres_child.py")
_MAX_LINE = 4096


@asynccontextmanager
async def child(*args: str) -> AsyncIterator[tuple[Process, BufferedByteReceiveStream]]:
    """``postgres_child.py args...`` running, with a reader of its stdout; killed if still running at exit."""
    process = await anyio.open_process(
        [sys.executable, str(_CHILD), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    async with process:
        assert process.stdout is not None
        try:
            yield process, BufferedByteReceiveStream(process.stdout)
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()


async def read_line(stream: BufferedByteReceiveStream) -> str:
    """The next line the child printed, without its newline."""
    return (await stream.receive_until(b"\n", _MAX_LINE)).decode()
