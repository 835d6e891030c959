"""Child processes for the tests of every package: start a script, read the lines it prints, kill it at the end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

_MAX_LINE = 4096


@asynccontextmanager
async def running(script: Path, *args: str) -> AsyncIterator[tuple[Process, BufferedByteReceiveStream]]:
    """``python script args...`` running, with a reader of its stdout; killed if still running at exit."""
    process = await anyio.open_process(
        [sys.executable, str(script), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
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
    """The next line the process printed, without its newline."""
    return (await stream.receive_until(b"\n", _MAX_LINE)).decode()


async def expect(stream: BufferedByteReceiveStream, line: str) -> None:
    """Read lines until ``line`` (`anyio.IncompleteRead` if the process ends first)."""
    while await read_line(stream) != line:
        pass
