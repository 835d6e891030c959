"""The ``eventbus`` command, run as a real child process against real SQLite files and PostgreSQL."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

import anyio
import pytest
from cli_app import AUDIT, CliNote, CliOrder, create_bus

import eventbus
from eventbus.store import redact_url
from tests.postgres_server import POSTGRES_URL, admin_sql, with_password

TESTS = Path(__file__).parent
ROOT = TESTS.parent
WAIT = 30
PASSWORD = "s3cret-pw"
ORDERS = [CliOrder(order_id=f"O{i}", amount=50.0 * i) for i in range(1, 6)]  # O3, O4, O5 are big
NOTES = [CliNote(text="hello"), CliNote(text="bye")]
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(*paths: Path) -> dict[str, str]:
    """The environment of a child that can import this folder's modules (and ``paths``)."""
    path = os.pathsep.join(filter(None, [*map(str, (TESTS, *paths)), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}


def _run(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``eventbus ARGS`` in a child process, stdin/stdout/stderr not terminals."""
    return subprocess.run(
        [sys.executable, "-m", "eventbus.cli", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=_env(),
        cwd=cwd,
        timeout=WAIT,
    )


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _fill(url: str, events: Sequence[CliOrder | CliNote]) -> None:
    """Publish ``events`` through the application's broken bus, so big orders become dead letters."""

    async def fill() -> None:
        async with create_bus(url, broken=True) as bus:
            await bus.publish_many(events)

    anyio.run(fill)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def filled(url: str) -> str:
    _fill(url, [*ORDERS, *NOTES])
    return url


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema name for this test, dropped afterwards."""
    schema = f"eventbus_cli_{uuid4().hex[:12]}"
    yield schema
    admin_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- the command itself ---------------------------------------------------------------


def test_a_bare_call_prints_help_and_exits_0() -> None:
    done = _run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: eventbus")
    for command in ("catalog", "compact", "demo", "dlq", "export", "replay", "stats", "tail", "trace"):
        assert f"  {command} " in done.stdout


def test_a_bare_dlq_prints_its_help_and_exits_0() -> None:
    done = _run("dlq")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: eventbus dlq")
    for action in ("list", "purge", "redrive"):
        assert f"  {action} " in done.stdout


def test_version() -> None:
    done = _run("--version")
    assert done.returncode == 0
    assert done.stdout == f"eventbus {eventbus.__version__}\n"


def test_version_works_without_the_cli_extra() -> None:
    code = (
        "import sys; sys.modules['click'] = None; from eventbus.cli import main; raise SystemExit(main(['--version']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"eventbus {eventbus.__version__}\n"


def test_without_the_cli_extra_the_command_names_it() -> None:
    code = "import sys; sys.modules['click'] = None; from eventbus.cli import main; raise SystemExit(main([]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT, check=False)
    assert done.returncode == 1
    assert "needs the 'cli' extra" in done.stderr
    assert "pip install 'eventbus[cli]'" in done.stderr
    assert "Traceback" not in done.stderr


# -- store commands never create a store ------------------------------------------------

STORE_COMMANDS = [
    ["replay"],
    ["export"],
    ["tail", "--limit", "1"],
    ["stats"],
    ["dlq", "list"],
    ["dlq", "purge", "--yes"],
    ["dlq", "redrive", "--app", "cli_app:create_bus"],
    ["compact", "--keep", "1"],
    ["trace", "01a20769-56b4-7c44-98cf-87519f143136"],
]


def _store_command(command: list[str], url: str) -> list[str]:
    """``command`` with the store URL where it goes (after ``dlq ACTION``, else after the command)."""
    at = 2 if command[0] == "dlq" else 1
    return [*command[:at], url, *command[at:]]


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
def test_a_missing_sqlite_file_is_an_error_naming_it(command: list[str], tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    done = _run(*_store_command(command, f"sqlite:///{path}"))
    assert done.returncode == 1
    assert f"{path}" in done.stderr
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not path.exists()


def test_export_from_a_missing_store_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    done = _run("export", f"sqlite:///{tmp_path / 'typo.db'}", "-o", str(out))
    assert done.returncode == 1
    assert "does not exist" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
def test_a_missing_postgres_schema_is_an_error_naming_it(command: list[str], pg_schema: str) -> None:
    done = _run(*_store_command(command, f"{with_password(POSTGRES_URL, PASSWORD)}?schema={pg_schema}"))
    assert done.returncode == 1
    assert f"schema '{pg_schema}'" in done.stderr
    assert "does not exist" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert admin_sql("SELECT 1 FROM pg_namespace WHERE nspname = $1", pg_schema) == []


# -- history ------------------------------------------------------------------------


def test_export_writes_every_record_as_a_json_line(filled: str, tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"
    done = _run("export", filled, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "exported 7 records to " + str(out) + "\n"
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


def test_export_honours_the_range_and_type_filters(filled: str) -> None:
    done = _run("export", filled, "--from-seq", "2", "--to-seq", "6", "--type", "cli.note")
    assert done.returncode == 0, done.stderr
    assert [(line["seq"], line["data"]["text"]) for line in _json_lines(done.stdout)] == [(6, "hello")]


def test_replay_prints_lines_for_people_and_json_lines_when_asked(filled: str) -> None:
    done = _run("replay", filled, "--to-seq", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 5
    assert lines[0].split()[0] == "1"
    assert "cli.order v1" in lines[0]
    assert '"order_id":"O1"' in lines[0]
    as_json = _run("replay", filled, "--json", "--type", "cli.note")
    assert [line["data"] for line in _json_lines(as_json.stdout)] == [{"text": "hello"}, {"text": "bye"}]


def test_no_progress_bar_when_stderr_is_not_a_terminal(filled: str) -> None:
    for command in ("replay", "export"):
        done = _run(command, filled)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert "\x1b" not in done.stdout
        assert len(done.stdout.splitlines()) == 7


def test_a_reader_that_stops_early_ends_the_export_quietly(url: str) -> None:
    _fill(url, [CliNote(text="x" * 200) for _ in range(2_000)])  # far more than a pipe holds
    child = subprocess.Popen(
        [sys.executable, "-m", "eventbus.cli", "export", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert child.stdout is not None
    assert child.stderr is not None
    assert json.loads(child.stdout.readline())["seq"] == 1
    child.stdout.close()  # as `| head -1` does
    assert child.wait(WAIT) == 1
    assert child.stderr.read() == b""
    child.stderr.close()


def _on_terminal(args: Sequence[str], *streams: str, answer: bytes = b"") -> tuple[int, str, str, str]:
    """Run ``eventbus ARGS`` with ``streams`` (of stdin, stdout, stderr) on a pseudo-terminal.

    Returns (exit status, stdout, stderr, what the terminal showed); the
    streams on the terminal are empty. ``answer`` is typed on the terminal.
    """
    primary, secondary = pty.openpty()
    shown: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read_terminal)
    pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    pipes.update(dict.fromkeys(streams, secondary))
    child = subprocess.Popen([sys.executable, "-m", "eventbus.cli", *args], env=_env(), **pipes)
    os.close(secondary)
    reader.start()
    if answer:
        os.write(primary, answer)
    try:
        out, err = child.communicate(timeout=WAIT)
    finally:
        reader.join(WAIT)
        os.close(primary)
    terminal = b"".join(shown).decode(errors="replace")
    return child.returncode, (out or b"").decode(), (err or b"").decode(), terminal


def test_a_progress_bar_with_rate_and_eta_on_a_terminal_leaves_stdout_intact(filled: str) -> None:
    status, out, _, terminal = _on_terminal(["replay", filled, "--json"], "stderr")
    assert status == 0, terminal
    assert "replay" in terminal
    assert "7/7" in terminal
    assert "records/s" in terminal
    assert "eta" in terminal
    assert [line["seq"] for line in _json_lines(out)] == list(range(1, 8))


def test_records_on_the_same_terminal_as_the_bar_are_printed_whole(filled: str) -> None:
    status, _, _, terminal = _on_terminal(["replay", filled], "stdout", "stderr")
    assert status == 0, terminal
    assert "7/7" in terminal
    lines = [line.strip() for line in ANSI_ESCAPE.sub("", terminal).splitlines()]
    records = [line for line in lines if line[:1].isdigit()]
    assert [int(line.split()[0]) for line in records] == list(range(1, 8))
    assert records[0].endswith('cli.order v1  {"order_id":"O1","amount":50.0}')
    assert records[-1].endswith('cli.note v1  {"text":"bye"}')


TAIL_NOTES_FROM_2 = ("--from-seq", "2", "--limit", "2", "--type", "cli.note", "--json")


def test_tail_follows_events_another_process_appends(url: str) -> None:
    _fill(url, ORDERS[:1])

    async def follow() -> bytes:
        tail = await anyio.open_process(
            [sys.executable, "-m", "eventbus.cli", "tail", url, *TAIL_NOTES_FROM_2],
            env=_env(),
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
        return output

    lines = _json_lines(anyio.run(follow).decode())
    assert [(line["seq"], line["data"]) for line in lines] == [(2, {"text": "first"}), (4, {"text": "last"})]


_SIGINT_IGNORED = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, '-m', 'eventbus.cli', *sys.argv[1:]])"
)
"""Runs the CLI with SIGINT ignored, as a shell starts a background job (``cmd &``)."""


@pytest.mark.parametrize("started", ["in the foreground", "as a background job"])
def test_ctrl_c_stops_tail_with_status_130(url: str, started: str) -> None:
    _fill(url, ORDERS[:1])
    command = ["-m", "eventbus.cli"] if started == "in the foreground" else ["-c", _SIGINT_IGNORED]

    async def interrupt() -> tuple[int, bytes]:
        tail = await anyio.open_process(
            [sys.executable, *command, "tail", url, "--from-seq", "2"], env=_env(), stderr=subprocess.PIPE
        )
        async with tail, create_bus(url) as bus:
            assert tail.stdout is not None
            assert tail.stderr is not None
            try:
                with anyio.fail_after(WAIT):
                    await bus.publish(CliNote(text="ready"))
                    output = b""
                    while b"\n" not in output:  # tail is following: now interrupt it
                        output += await tail.stdout.receive()
                    tail.send_signal(signal.SIGINT)
                    status = await tail.wait()
                    errors = b"".join([chunk async for chunk in tail.stderr])
            except BaseException:
                tail.kill()  # one that ignored Ctrl-C would otherwise outlive the test
                raise
        return status, errors

    status, errors = anyio.run(interrupt)
    assert status == 130
    assert b"Traceback" not in errors


def test_tail_prints_lines_for_people(filled: str) -> None:
    done = _run("tail", filled, "--from-seq", "6", "--limit", "2")
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["6", "7"]
    assert "cli.note v1" in done.stdout


# -- stats and dead letters -------------------------------------------------------------


def test_stats_as_json_and_as_tables(filled: str) -> None:
    done = _run("stats", filled, "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["store"] == filled
    assert stats["head"] == 7
    assert stats["subscriptions"][AUDIT] == {"position": 5, "lag": 2}
    assert stats["dead_letters"] == {AUDIT: 3}
    table = _run("stats", filled)
    assert table.returncode == 0, table.stderr
    assert "head 7" in table.stdout
    rows = [line.split() for line in table.stdout.splitlines()]
    assert ["│", AUDIT, "│", "5", "│", "2", "│"] in rows
    assert ["│", AUDIT, "│", "3", "│"] in rows


def test_compact_removes_old_history_and_reading_starts_after_it(filled: str) -> None:
    done = _run("compact", filled, "--keep", "2")
    assert done.returncode == 0, done.stderr
    # the dead letters of O3..O5 (seqs 3..5) hold history from seq 3
    assert done.stdout == (
        f"{filled}: removed 2 records; history now starts at seq 3 (held back by a dead letter of '{AUDIT}' on seq 3)\n"
    )
    assert json.loads(_run("stats", filled, "--json").stdout)["first_seq"] == 3
    replayed = _run("replay", filled, "--json")
    assert [record["seq"] for record in _json_lines(replayed.stdout)] == [3, 4, 5, 6, 7]
    below = _run("export", filled, "--from-seq", "1")
    assert below.returncode == 1
    assert "HistoryTruncated" in below.stderr
    assert "read from seq 3" in below.stderr
    assert below.stdout == ""


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        ([], 1, "give --keep and/or --keep-age"),
        (["--keep", "-1"], 2, "-1 is not in the range x>=0"),
        (["--keep-age", "soon"], 2, "not an age: 'soon'"),
        (["--keep-age", "0h"], 2, "greater than zero"),
    ],
)
def test_compact_refuses_what_it_cannot_do_and_removes_nothing(
    filled: str, args: list[str], status: int, message: str
) -> None:
    done = _run("compact", filled, *args)
    assert done.returncode == status
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(_run("stats", filled, "--json").stdout)["first_seq"] == 1


def test_dlq_list_as_json_and_as_a_table(filled: str) -> None:
    listed = _run("dlq", "list", filled, "--subscription", AUDIT, "--json")
    assert listed.returncode == 0, listed.stderr
    letters = _json_lines(listed.stdout)
    assert sorted(letter["record"]["data"]["order_id"] for letter in letters) == ["O3", "O4", "O5"]
    assert all(letter["attempts"] == 2 for letter in letters)
    assert all(letter["error_type"].endswith("ValueError") for letter in letters)
    table = _run("dlq", "list", filled)
    assert table.returncode == 0, table.stderr
    for letter in letters:
        assert letter["id"] in table.stdout
    assert "cannot audit order O3" in table.stdout


def _letter_ids(url: str) -> list[str]:
    return [letter["id"] for letter in _json_lines(_run("dlq", "list", url, "--json").stdout)]


def test_purge_without_a_terminal_refuses_unless_yes(filled: str) -> None:
    refused = _run("dlq", "purge", filled, stdin="y\n")
    assert refused.returncode == 1
    assert "not purging 3 dead letters without --yes" in refused.stderr
    assert len(_letter_ids(filled)) == 3
    one = _letter_ids(filled)[0]
    purged = _run("dlq", "purge", filled, "--id", one, "--yes")
    assert purged.returncode == 0, purged.stderr
    assert purged.stderr == "purged 1 dead letters\n"
    assert one not in _letter_ids(filled)
    assert _run("dlq", "purge", filled, "-y").stderr == "purged 2 dead letters\n"
    assert _letter_ids(filled) == []


def test_purge_asks_on_a_terminal(filled: str) -> None:
    status, _, stderr, _ = _on_terminal(["dlq", "purge", filled], "stdin", answer=b"n\n")
    assert status == 0, stderr  # a declined confirmation is not an error
    assert f"Purge 3 dead letters from {filled}?" in stderr
    assert "nothing purged" in stderr
    assert "Aborted" not in stderr
    assert len(_letter_ids(filled)) == 3
    status, _, stderr, _ = _on_terminal(["dlq", "purge", filled], "stdin", answer=b"y\n")
    assert status == 0, stderr
    assert "purged 3 dead letters" in stderr
    assert _letter_ids(filled) == []


def test_dlq_list_at_80_columns_prints_a_block_per_letter_with_nothing_cut(filled: str) -> None:
    letters = _json_lines(_run("dlq", "list", filled, "--json").stdout)
    done = subprocess.run(
        [sys.executable, "-m", "eventbus.cli", "dlq", "list", filled],
        env={**_env(), "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    assert all(len(line) <= 80 for line in lines)
    for letter in letters:
        order_id = letter["record"]["data"]["order_id"]
        assert f"id            {letter['id']}" in lines
        assert f"error         ValueError: cannot audit order {order_id}" in lines
        assert f"event         seq {letter['record']['seq']}, cli.order" in lines


@pytest.mark.parametrize("action", [["purge", "--yes"], ["redrive", "--app", "cli_app:create_bus"]])
def test_an_id_that_matches_no_letter_is_named_and_nothing_is_done(filled: str, action: list[str]) -> None:
    known = _letter_ids(filled)[0]
    unknown = str(uuid4())
    done = _run("dlq", action[0], filled, "--id", known, "--id", unknown, *action[1:])
    assert done.returncode == 1
    assert done.stderr == (
        f"eventbus: no dead letter has the id {unknown} in {filled} (see `eventbus dlq list`); nothing was done\n"
    )
    assert len(_letter_ids(filled)) == 3


def test_dlq_redrive_through_the_app(url: str) -> None:
    _fill(url, ORDERS)
    redriven = _run("dlq", "redrive", url, "--app", "cli_app:create_bus")
    assert redriven.returncode == 0, redriven.stderr
    assert "redrove 3 dead letters; 0 left" in redriven.stderr
    assert _letter_ids(url) == []


def test_redrive_that_still_fails_keeps_the_letters_and_exits_2(url: str, tmp_path: Path) -> None:
    _fill(url, ORDERS)
    before = _letter_ids(url)
    (tmp_path / "broken_app.py").write_text(
        "from functools import partial\nfrom cli_app import create_bus as make\n"
        "create_bus = partial(make, broken=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "eventbus.cli", "dlq", "redrive", url, "--app", "broken_app:create_bus"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 2
    assert "redrove 0 dead letters; 3 left" in done.stderr
    renamed = dict(re.findall(r"failed again: (\S+) is now (\S+)", done.stderr))
    # each old id with its new one, as `dlq list` now shows them
    assert sorted(renamed) == sorted(before)
    assert sorted(renamed.values()) == sorted(_letter_ids(url))
    assert not set(before) & set(_letter_ids(url))


def test_the_console_script_imports_the_app_from_the_working_directory(url: str, tmp_path: Path) -> None:
    _fill(url, ORDERS)
    (tmp_path / "shop.py").write_text("from cli_app import create_bus\n")
    script = Path(sys.executable).with_name("eventbus")
    done = subprocess.run(
        [str(script), "dlq", "redrive", url, "--app", "shop:create_bus"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "redrove 3 dead letters; 0 left" in done.stderr


# -- PostgreSQL, and passwords ------------------------------------------------------------


def test_on_postgres_no_password_appears_in_any_output(pg_schema: str) -> None:
    url = f"{with_password(POSTGRES_URL, PASSWORD)}?schema={pg_schema}"
    demo_url = f"{url}_demo"
    _fill(url, ORDERS)
    outputs = [
        _run("stats", url),
        _run("stats", url, "--json"),
        _run("dlq", "list", url),
        _run("dlq", "list", url, "--json"),
        _run("dlq", "purge", url),
        _run("export", url, "--to-seq", "2"),
        _run("export", url.replace("127.0.0.1:5432", "127.0.0.1:1"), "--to-seq", "2"),
        _run("stats", f"{POSTGRES_URL}?schema={pg_schema}&password={PASSWORD}"),
        _run("compact", url, "--keep", "100"),
        _run("replay", url, "--to-seq", "2"),
        _run("tail", url, "--from-seq", "1", "--limit", "1"),
        _run("dlq", "purge", url, "--id", str(uuid4()), "--yes"),
        _run("stats", url.replace("postgresql://", "postgresq://")),
        _run("dlq", "redrive", url, "--app", "cli_app:create_bus"),
    ]
    try:
        outputs.append(_run("demo", "--store", demo_url))
    finally:
        admin_sql(f'DROP SCHEMA IF EXISTS "{pg_schema}_demo" CASCADE')
    for done in outputs:
        assert PASSWORD not in done.stdout + done.stderr, done.args
    assert [done.returncode for done in outputs[9:]] == [0, 0, 1, 1, 0, 0], [done.stderr for done in outputs[9:]]
    assert outputs[-1].stdout.startswith(f"eventbus demo: a small order service on {redact_url(demo_url)}\n")
    assert "did you mean 'postgresql'?" in outputs[12].stderr
    stats = json.loads(outputs[1].stdout)
    assert stats["head"] == 5
    assert stats["store"] == f"{POSTGRES_URL.replace('://postgres@', '://postgres:***@')}?schema={pg_schema}"
    assert "postgres:***@" in outputs[0].stdout
    assert len(_json_lines(outputs[3].stdout)) == 3
    assert outputs[6].returncode == 1
    assert "postgres:***@127.0.0.1:1" in outputs[6].stderr
    assert outputs[8].returncode == 0, outputs[8].stderr
    assert outputs[8].stdout.startswith("postgresql://postgres:***@")
    first_id = _json_lines(outputs[5].stdout)[0]["event_id"]
    traces = [_run("trace", url, first_id), _run("trace", url, first_id, "--json"), _run("trace", url, str(uuid4()))]
    for done in traces:
        assert PASSWORD not in done.stdout + done.stderr, done.args
    assert [done.returncode for done in traces] == [0, 0, 1], [done.stderr for done in traces]


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "nosuch://x"], "nosuch"),
        (["dlq", "redrive", "memory://", "--app", "no_such_module:create_bus"], "cannot import 'no_such_module'"),
        (["dlq", "redrive", "memory://", "--app", "no_colon"], "--app must look like"),
        (["dlq", "redrive", "memory://", "--app", "cli_app:AUDIT"], "is a value of type str, not a function"),
        (["dlq", "redrive", "memory://", "--app", "cli_app:CliOrder"], "is the event class CliOrder, not a function"),
        (["dlq", "redrive", "memory://", "--app", "cli_app:create_bus_async"], "is an async function"),
        (["dlq", "redrive", "memory://", "--app", "cli_app:create_bus_later"], "returned coroutine, not an EventBus"),
        (
            ["dlq", "redrive", "memory://", "--app", "cli_app:create_two_buses"],
            "cannot be called with a store URL alone",
        ),
        (["dlq", "redrive", "memory://", "--app", "cli_app:BUS"], "is an EventBus; this command builds the bus"),
        (
            ["dlq", "redrive", "memory://", "--app", "cli_app:create_buss"],
            "module 'cli_app' has no attribute 'create_buss'",
        ),
        (["catalog", "--app", "cli_app:AUDIT"], "expected an EventBus or a function taking a store URL"),
        (["catalog", "--app", "cli_app:CliOrder"], "is the event class CliOrder"),
        (["catalog", "--app", "cli_app:nothing"], "module 'cli_app' has no attribute 'nothing'"),
        (["stats", "events.db"], "use 'sqlite:///events.db'"),
        (["stats", "sqllite:///events.db"], "did you mean 'sqlite'?"),
    ],
)
def test_bad_input_exits_1_with_a_message_naming_it(args: list[str], message: str) -> None:
    done = _run(*args)
    assert done.returncode == 1
    assert done.stderr.startswith("eventbus: ")
    assert message in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr  # one line: no traceback, no "never awaited" warning


def test_an_asgi_app_given_as_app_is_named_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "eventbus.cli", "dlq", "redrive", "memory://", "--app", "fastapi_service:app"],
        env=_env(ROOT / "examples"),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "eventbus: ValueError: --app 'fastapi_service:app' is a FastAPI object (an async callable, such as an ASGI "
        "app), not a function; expected a function taking a store URL and returning an EventBus\n"
    )


def test_a_seq_below_1_is_refused_by_the_argument_parser(url: str) -> None:
    done = _run("export", url, "--from-seq", "0")
    assert done.returncode == 2
    assert "x>=1" in done.stderr


# -- the demo -------------------------------------------------------------------------


def test_demo_tours_a_sqlite_file_and_resumes_on_the_second_run(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    first = _run("demo", "--store", store)
    assert first.returncode == 0, first.stderr
    assert "published A1" in first.stdout
    assert "redrive delivered 1 again; dead letters left: 0" in first.stdout
    assert "order-history handled 12 events in this run" in first.stdout
    second = _run("demo", "--store", store)
    assert second.returncode == 0, second.stderr
    assert "already holds 12 events" in second.stdout
    # the durable subscription resumed: it handled this run's 12 events, not all 24
    assert "order-history handled 12 events in this run" in second.stdout
    assert "seq   24" in second.stdout
    assert f"This history stays in {store}:" in second.stdout


def test_demo_on_memory_says_the_history_ends_with_it() -> None:
    done = _run("demo", "--store", "memory://")
    assert done.returncode == 0, done.stderr
    assert "The store was in memory, so this history ended with the demo." in done.stdout
    assert "stays in" not in done.stdout


def test_demo_in_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "no-such-folder"
    done = _run("demo", "--store", f"sqlite:///{folder / 'demo.db'}")
    assert done.returncode == 1
    assert done.stderr.endswith(f"the folder {folder} does not exist (the store creates its file, not folders)\n")
    assert not folder.exists()


def test_demo_without_options_writes_eventbus_demo_db_in_the_working_directory(tmp_path: Path) -> None:
    done = _run("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "eventbus-demo.db").is_file()
