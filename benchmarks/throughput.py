"""Publish-to-handled throughput of eventbus beside its peers and the raw-Python floor.

Every figure is measured in the same run, on asyncio, with pre-built events
and async handlers that only count. The *floor* is the least any in-process
bus can do: a dict from type to handlers, each awaited directly. Ratios are
``eventbus / other``: above 1.0 means eventbus is faster.

The library runs as an application that configured no logging at all would
run it (the default), and, labelled "structlog at warning", as a quiet
application that configured structlog to drop everything below warning.

    python benchmarks/throughput.py            # full run: best of 3 rounds (a few minutes)
    python benchmarks/throughput.py --quick    # small counts, for CI
    python benchmarks/throughput.py --chart docs/assets/throughput.svg   # also draw the one-handler cases

Scenarios (DESIGN.md section 3 states the targets; the code is in ``_cases.py``,
which ``instructions.py`` counts under callgrind):
- single: one async handler, ``publish`` per event, MemoryStore; unconfigured and quiet.
- batch: the same through ``publish_many`` in batches of 1 000.
- routing: one matching handler among 1 000 subscriptions of other types.
- policies: one handler with ``retry=Retry()`` and ``concurrency=4``.
- fanout: ten handlers of one type (deliveries/s); unconfigured and quiet.
- paced: one handler, and ten, with the publisher yielding to the event loop after
  each publish (so each publish wakes the workers), beside the floor doing the same.
- peers: pyee, blinker, bubus and pyventus doing the single-handler case.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from _cases import CASES, Stopwatch
from _chart import bar_chart

# Each scenario runs once per round and keeps its best round (timeit's advice:
# the fastest run is the one least disturbed by the rest of the machine), and
# rounds interleave the scenarios so that a busy spell does not land on one.
ROUNDS = 3
ROUNDS_QUICK = 2
ORDER = [
    "floor",
    "eventbus",
    "eventbus-quiet",
    "batch",
    "routing",
    "policies",
    "floor10",
    "fanout",
    "fanout-quiet",
    "floor-paced",
    "paced",
    "floor10-paced",
    "fanout-paced",
    "pyee",
    "blinker",
    "bubus",
    "pyventus",
]
CHARTED = ["floor", "eventbus", "eventbus-quiet", "batch", "blinker", "pyee", "pyventus", "bubus"]
"""The one-handler cases, drawn by ``--chart``."""


async def rate(key: str, n: int) -> float:
    """Deliveries per second of one run of case ``key`` over ``n`` pre-built events."""
    case = CASES[key]
    events = case.build(n)
    clock = Stopwatch()
    await case.measure(events, clock)
    return n * case.handlers / clock.elapsed


async def main(quick: bool, chart: Path | None) -> dict[str, float]:
    n = 20_000 if quick else 300_000
    # bubus slows down as its history grows (about 240 events/s at 200 events, 50/s at 2 000),
    # so it gets a short run: a longer one would only make it look worse. pyee and pyventus
    # create a task per handler call, so 50 000 events already take a while.
    # A paced event costs event-loop turns (several for fan-out), so those cases get 50 000 events too.
    sizes = {
        "pyee": 5_000 if quick else 50_000,
        "pyventus": 5_000 if quick else 50_000,
        "bubus": 200 if quick else 500,
        **dict.fromkeys(["floor-paced", "paced", "floor10-paced", "fanout-paced"], 5_000 if quick else 50_000),
    }
    rounds = ROUNDS_QUICK if quick else ROUNDS
    print(
        f"eventbus throughput benchmark ({n:,} events per eventbus case; asyncio; "
        f"best of {rounds} interleaved rounds)\n"
    )
    best: dict[str, float] = {}
    for _ in range(rounds):
        for key in ORDER:
            best[key] = max(best.get(key, 0.0), await rate(key, sizes.get(key, n)))
    width = max(len(CASES[key].label) for key in ORDER) + 2
    for key in ORDER:
        unit = "deliveries/s" if CASES[key].handlers > 1 else "events/s"
        print(f"{CASES[key].label:<{width}}{best[key]:>14,.0f} {unit}")

    single, quiet = best["eventbus"], best["eventbus-quiet"]
    print("\nratios (eventbus / other; above 1.0 = eventbus faster)")
    print(f"  single vs floor:             {single / best['floor']:6.2f}   (target: 1 000 000 events/s)")
    print(f"  single quiet vs floor:       {quiet / best['floor']:6.2f}")
    print(f"  single unconfigured vs quiet:{single / quiet:6.2f}")
    print(f"  batch vs floor:              {best['batch'] / best['floor']:6.2f}")
    print(f"  routing vs single:           {best['routing'] / single:6.2f}   (target: >= 0.90)")
    print(f"  retry+concurrency vs single: {best['policies'] / single:6.2f}   (target: >= 0.80)")
    print(f"  fan-out vs floor:            {best['fanout'] / best['floor10']:6.2f}   (target: 3 000 000 deliveries/s)")
    print(f"  fan-out quiet vs floor:      {best['fanout-quiet'] / best['floor10']:6.2f}")
    print(f"  paced vs paced floor:        {best['paced'] / best['floor-paced']:6.2f}")
    print(f"  fan-out paced vs its floor:  {best['fanout-paced'] / best['floor10-paced']:6.2f}")
    for key in ("pyee", "blinker", "bubus", "pyventus"):
        print(f"  single vs {key:<19}{single / best[key]:9.2f}")
    if chart is not None:
        bar_chart(
            f"Publish-to-handled, one async handler (best of {rounds} rounds, one run)",
            "events/s",
            [(CASES[key].label, best[key]) for key in CHARTED],
            chart,
        )
        print(f"\nchart written to {chart}")
    return best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts (CI)")
    parser.add_argument("--chart", type=Path, metavar="SVG", help="write a bar chart of the one-handler cases")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.chart))
