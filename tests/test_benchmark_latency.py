"""benchmarks/latency.py: the verdict against the floor of the same round, and the chart."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _latency() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("latency")
    finally:
        sys.path.remove(str(BENCHMARKS))


def _figures(p99: int, p999: int, maximum: int) -> dict[str, Any]:
    return {
        "p50": 10_000,
        "p99": p99,
        "p999": p999,
        "max": maximum,
        "late": 0,
        "full_collections": 0,
        "longest_full": 0,
        "longest_young": 0,
    }


def test_the_verdict_takes_each_bound_from_the_floor_of_its_round() -> None:
    latency = _latency()
    floor = _figures(40_000, 100_000, 4_000_000)
    within = {"floor": floor, "eventbus": _figures(120_000, 300_000, 5_000_000)}
    slow_p99 = {"floor": floor, "eventbus": _figures(121_000, 300_000, 5_000_000)}
    paused = {"floor": floor, "eventbus": _figures(120_000, 300_000, 8_000_001)}
    busy_machine = {"floor": _figures(40_000, 100_000, 20_000_000), "eventbus": _figures(1, 1, 40_000_000)}
    lines = latency.report([within, slow_p99, paused, busy_machine]).splitlines()
    verdicts = ["not met" not in line for line in lines if line.startswith("  round")]
    assert verdicts == [True, False, False, True]


def test_the_chart_draws_the_worst_round(tmp_path: Path) -> None:
    latency = _latency()
    rounds = [
        {"floor": _figures(40_000, 100_000, 4_000_000), "eventbus": _figures(50_000, 150_000, 6_000_000)},
        {"floor": _figures(30_000, 90_000, 3_000_000), "eventbus": _figures(60_000, 140_000, 5_000_000)},
    ]
    path = tmp_path / "latency.svg"
    latency.chart(rounds, path)
    svg = path.read_text(encoding="utf-8")
    assert "eventbus: EventBus(), p99" in svg
    assert ">60<" in svg, "the worse round's p99, in µs"
