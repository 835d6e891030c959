"""benchmarks/instructions.py: the per-event arithmetic, the report table, and one real callgrind count."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _script(name: str) -> ModuleType:
    """A benchmark script as a module (it imports its siblings the way a script run from there does)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def _instructions() -> ModuleType:
    return _script("instructions")


def _inlined_floor() -> ModuleType:
    return _script("inlined_floor")


def test_per_event_removes_startup_and_event_building() -> None:
    instructions = _instructions()
    # 1 000 events: the run costs 9 000 000 more than with 0 events, of which building
    # the events (measured without a bus) is 2 000 000, so delivery is 7 000 per event.
    assert instructions.per_event(10_000_000, 1_000_000, 2_500_000, 500_000, 1_000) == 7_000


def test_table_reports_ratio_target_and_verdict() -> None:
    instructions = _instructions()
    rows = [
        instructions.Row("floor", "floor: 1 handler", 1_000, 2_000.0),
        instructions.Row("eventbus", "eventbus: 1 handler", 1_000, 12_000.0),
        instructions.Row("floor10", "floor: 10 handlers", 1_000, 10_000.0),
        instructions.Row("fanout", "eventbus: fan-out", 1_000, 50_000.0),
        instructions.Row("pyee", "peer: pyee", 1_000, 30_000.0),
    ]
    lines = instructions.table(rows).splitlines()
    assert lines[0].split() == ["case", "N", "instr/event", "x", "floor", "target"]
    eventbus = next(line for line in lines if line.startswith("eventbus: 1 handler"))
    assert eventbus.split()[-5:] == ["1,000", "12,000", "6.0", "12,500", "met"]
    fanout = next(line for line in lines if line.startswith("eventbus: fan-out"))
    assert "5.0" in fanout.split()  # against the 10-handler floor, not the 1-handler one
    assert fanout.endswith("45,000 not met")
    pyee = next(line for line in lines if line.startswith("peer: pyee"))
    assert pyee.split()[-2:] == ["30,000", "15.0"]  # a peer has a ratio and no target


def test_counts_a_real_process_under_callgrind() -> None:
    instructions = _instructions()
    binary = instructions.interpreter()
    assert os.path.realpath(binary) == binary
    assert Path(binary).name.startswith("python")
    empty = instructions.count_instructions([binary, "-S", "-c", "pass"])
    once = instructions.count_instructions([binary, "-S", "-c", "for _ in range(100_000): pass"])
    twice = instructions.count_instructions([binary, "-S", "-c", "for _ in range(200_000): pass"])
    # A bare interpreter start is millions of instructions, and counts are deterministic:
    # the second 100 000 turns cost what the first did, within a few percent, on any Python.
    assert empty > 1_000_000
    first, second = once - empty, twice - once
    assert first > 0
    assert abs(second - first) < 0.05 * first


def test_script_says_what_is_missing_without_valgrind(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "instructions.py"), "--quick"],
        env=dict(os.environ, PATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "valgrind is not installed" in done.stderr


def test_inlined_floor_delivers_everything_in_every_mode_and_prices_every_part(monkeypatch: pytest.MonkeyPatch) -> None:
    floor = _inlined_floor()
    # a bound far below the event count, so the publisher waits for room as it does at N = 20 000
    monkeypatch.setattr(floor, "MAX_PENDING", 7)
    for mode in floor.MODES.values():
        # run() fails unless every subscription handled every event and moved its position to the last
        asyncio.run(floor.run(100, *mode))
    for _, part in floor.PARTS.values():
        asyncio.run(part(100))
