"""``eventbus projection rebuild``, run as a user runs it (a child process), on real SQLite files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio

from eventbus import Event, EventBus, Transaction

_WAIT = 60


class Counted(Event, name="eventbus.tests.cli_projection.Counted"):
    n: int


def _eventbus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus.cli", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=_WAIT,
        check=False,
    )


def _rows(path: Path, query: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(path)
    try:
        with connection:
            return connection.execute(query).fetchall()
    finally:
        connection.close()


async def _projected(path: Path) -> str:
    """A store at ``path`` whose projection ``view`` has projected 3 events into table ``view``."""
    url = f"sqlite:///{path}"
    bus = EventBus(store=url)

    @bus.subscribe(Counted, durable=True, name="view", from_seq=1)
    async def project(event: Counted, tx: Transaction) -> None:
        await tx.execute("INSERT INTO view (n) VALUES (?)", event.n)

    async with EventBus(store=url) as publisher:
        await publisher.publish_many([Counted(n=n) for n in range(3)])
    await anyio.to_thread.run_sync(_rows, path, "CREATE TABLE view (n INTEGER)")
    async with bus:
        await bus.drain()
    return url


async def test_rebuild_resets_the_checkpoint_with_the_read_model(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    url = await _projected(path)
    assert _rows(path, "SELECT count(*) FROM view") == [(3,)]
    done = await anyio.to_thread.run_sync(
        _eventbus, "projection", "rebuild", url, "view", "--reset", "DELETE FROM view", "--yes"
    )
    assert done.returncode == 0, done.stderr
    assert "projection 'view' starts over from seq 1" in done.stderr
    assert _rows(path, "SELECT count(*) FROM view") == [(0,)]
    assert _rows(path, "SELECT position FROM eventbus_checkpoints WHERE name = 'view'") == [(0,)]


async def test_rebuild_refuses_an_unknown_name_a_bad_statement_and_no_terminal(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    url = await _projected(path)
    unknown = await anyio.to_thread.run_sync(_eventbus, "projection", "rebuild", url, "veiw", "--yes")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        f"eventbus: no subscription named 'veiw' has run on {url} (the names saved there: 'view')"
    )
    bad = await anyio.to_thread.run_sync(
        _eventbus, "projection", "rebuild", url, "view", "--reset", "DELETE FROM missing_table", "--yes"
    )
    assert bad.returncode == 1
    assert "no such table: missing_table" in bad.stderr
    assert "Traceback" not in bad.stderr
    unasked = await anyio.to_thread.run_sync(_eventbus, "projection", "rebuild", url, "view")
    assert unasked.returncode == 1
    assert "without --yes" in unasked.stderr
    # nothing changed by any of them
    assert _rows(path, "SELECT count(*) FROM view") == [(3,)]
    assert _rows(path, "SELECT position FROM eventbus_checkpoints WHERE name = 'view'") == [(3,)]
