"""The ``eventbus`` command, run as a real child process against a real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_app import AUDIT, CliNote, CliOrder, create_bus

TESTS = Path(__file__).parent
WAIT = 30


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """``eventbus ARGS`` in a child process that can import this folder's modules."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "eventbus.cli", *args], capture_output=True, text=True, env=env, timeout=WAIT
    )


async def _eventbus(*args: str) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: _run(*args))


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


async def _fill(url: str, events: Sequence[CliOrder | CliNote]) -> None:
    """Publish ``events`` through the application's broken bus, so big orders become dead letters."""
    async with create_bus(url, broken=True) as bus:
        await bus.publish_many(events)


ORDERS = [CliOrder(order_id=f"O{i}", amount=50.0 * i) for i in range(1, 6)]  # O3, O4, O5 are big
NOTES = [CliNote(text="hello"), CliNote(text="bye")]


async def test_export_writes_every_record_as_a_json_line(url: str, tmp_path: Path) -> None:
    await _fill(url, [*ORDERS, *NOTES])
    out = tmp_path / "export.jsonl"
    done = await _eventbus("export", url, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "exported 7 records" in done.stderr
    lines = _json_lines(out.read_text())
    assert [line["seq"] for line in lines] == list(range(1, 8))
    assert lines[0]["type"] == "cli.order"
    assert lines[0]["version"] == 1
    assert lines[0]["data"] == {"order_id": "O1", "amount": 50.0}
    assert set(lines[0]) == {
        "seq",
        "type",
        "version",
        "event_id",
        "recorded_at",
        "correlation_id",
        "causation_id",
        "headers",
        "data",
    }


async def test_export_honours_the_range_and_type_filters(url: str) -> None:
    await _fill(url, [*ORDERS, *NOTES])
    done = await _eventbus("export", url, "--from-seq", "2", "--to-seq", "6", "--type", "cli.note")
    assert done.returncode == 0, done.stderr
    assert [(line["seq"], line["data"]["text"]) for line in _json_lines(done.stdout)] == [(6, "hello")]


async def test_replay_prints_records_and_a_progress_bar_when_asked(url: str) -> None:
    await _fill(url, ORDERS)
    done = await _eventbus("replay", url, "--progress")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 5
    assert lines[0].split()[0] == "1"
    assert "cli.order v1" in lines[0]
    assert '"order_id":"O1"' in lines[0]
    assert "replay [" in done.stderr
    assert "5/5" in done.stderr


async def test_tail_follows_events_another_process_appends(url: str) -> None:
    await _fill(url, ORDERS[:1])
    tail = await anyio.open_process(
        [sys.executable, "-m", "eventbus.cli", "tail", url, "--from-seq", "2", "--limit", "2", "--type", "cli.note"],
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    async with tail, create_bus(url) as bus:
        assert tail.stdout is not None
        with anyio.fail_after(WAIT):
            await bus.publish(CliNote(text="first"))
            output = b""
            while b"\n" not in output:
                output += await tail.stdout.receive()
            # tail is running and has shown the first note: the rest it must follow live
            await bus.publish(CliOrder(order_id="ignored", amount=1.0))
            await bus.publish(CliNote(text="last"))
            while output.count(b"\n") < 2:
                output += await tail.stdout.receive()
            assert await tail.wait() == 0
    lines = _json_lines(output.decode())
    assert [(line["seq"], line["data"]) for line in lines] == [(2, {"text": "first"}), (4, {"text": "last"})]


async def test_stats_reports_head_positions_and_dead_letters(url: str) -> None:
    await _fill(url, [*ORDERS, *NOTES])
    done = await _eventbus("stats", url)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["head"] == 7
    assert stats["subscriptions"][AUDIT]["position"] == 5
    assert stats["subscriptions"][AUDIT]["lag"] == 2
    assert stats["dead_letters"] == {AUDIT: 3}


async def test_dlq_list_purge_and_redrive(url: str) -> None:
    await _fill(url, ORDERS)
    listed = await _eventbus("dlq", "list", url, "--subscription", AUDIT)
    assert listed.returncode == 0, listed.stderr
    letters = _json_lines(listed.stdout)
    assert sorted(letter["record"]["data"]["order_id"] for letter in letters) == ["O3", "O4", "O5"]
    assert all(letter["attempts"] == 2 for letter in letters)
    assert all(letter["error_type"].endswith("ValueError") for letter in letters)

    purge_one = next(letter["id"] for letter in letters if letter["record"]["data"]["order_id"] == "O3")
    purged = await _eventbus("dlq", "purge", url, "--id", purge_one)
    assert purged.returncode == 0, purged.stderr
    assert "purged 1 dead letters" in purged.stderr

    redriven = await _eventbus("dlq", "redrive", url, "--app", "cli_app:create_bus")
    assert redriven.returncode == 0, redriven.stderr
    assert "redrove 2 dead letters; 0 left" in redriven.stderr
    assert _json_lines((await _eventbus("dlq", "list", url)).stdout) == []


async def test_redrive_that_still_fails_keeps_the_letters_and_exits_2(url: str, tmp_path: Path) -> None:
    await _fill(url, ORDERS)
    (tmp_path / "broken_app.py").write_text(
        "from functools import partial\nfrom cli_app import create_bus as make\n"
        "create_bus = partial(make, broken=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(tmp_path)])}
    done = await anyio.run_process(
        [sys.executable, "-m", "eventbus.cli", "dlq", "redrive", url, "--app", "broken_app:create_bus"],
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert b"redrove 0 dead letters; 3 left" in done.stderr


async def test_the_console_script_imports_the_app_from_the_working_directory(url: str, tmp_path: Path) -> None:
    await _fill(url, ORDERS)
    (tmp_path / "shop.py").write_text("from cli_app import create_bus\n")
    script = Path(sys.executable).with_name("eventbus")
    done = await anyio.run_process(
        [str(script), "dlq", "redrive", url, "--app", "shop:create_bus"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"redrove 3 dead letters; 0 left" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "nosuch://x"], "nosuch"),
        (["dlq", "redrive", "memory://", "--app", "no_such_module:create_bus"], "cannot import 'no_such_module'"),
        (["dlq", "redrive", "memory://", "--app", "no_colon"], "--app must look like"),
        (["dlq", "redrive", "memory://", "--app", "cli_app:AUDIT"], "is not a function"),
    ],
)
async def test_bad_input_exits_1_with_a_message_naming_it(args: list[str], message: str) -> None:
    done = await _eventbus(*args)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_seq_below_1_is_refused_by_the_argument_parser(url: str) -> None:
    done = await _eventbus("export", url, "--from-seq", "0")
    assert done.returncode == 2
    assert "must be >= 1" in done.stderr


async def test_demo_tours_a_sqlite_file_and_resumes_on_the_second_run(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    first = await _eventbus("demo", "--store", store)
    assert first.returncode == 0, first.stderr
    assert "published A1" in first.stdout
    assert "redrive delivered 1 again; dead letters left: 0" in first.stdout
    assert "order-history handled 12 events in this run" in first.stdout
    second = await _eventbus("demo", "--store", store)
    assert second.returncode == 0, second.stderr
    assert "already holds 12 events" in second.stdout
    # the durable subscription resumed: it handled this run's 12 events, not all 24
    assert "order-history handled 12 events in this run" in second.stdout
    assert "seq   24" in second.stdout
