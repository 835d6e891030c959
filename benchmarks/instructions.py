"""Instructions per event under valgrind's callgrind: the deterministic measure of the hot path.

A timing on a shared machine moves with whatever else runs on it; the number
of instructions the CPU executes for the same work does not. Each case of
``_cases.py`` (the same code ``throughput.py`` times) runs in a process of
its own under ``valgrind --tool=callgrind --callgrind-out-file=/dev/null``,
on the real interpreter binary (``sys.executable`` resolved through its
symlinks, so valgrind never traces a launcher script), four times:

- ``full``: build N events and deliver them;
- ``empty``: the same with 0 events (start-up, imports, bus set-up);
- ``build_full`` / ``build_empty``: build N (and 0) events with no bus at all.

instructions per event = ((full - empty) - (build_full - build_empty)) / N

so what is left is publish-to-handled alone. Fan-out counts per event (ten
deliveries). ``PYTHONHASHSEED=0`` keeps the counts steady (within about 0.5 %).

    python benchmarks/instructions.py            # every case, a few minutes
    python benchmarks/instructions.py --quick    # eventbus, 1 handler, N = 2 000: about a minute (CI)
    python benchmarks/instructions.py --case fanout --case policies   # only these (a before/after of a change)
    python benchmarks/instructions.py --profile fanout   # where its instructions go, by Python and C function
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import _cases
import _profile

TARGETS = {"eventbus": 12_500, "eventbus-quiet": 12_500, "fanout": 45_000, "fanout-quiet": 45_000}
"""DESIGN.md section 3: instructions per event, whether or not the application configured logging."""
FLOOR_OF = {
    "floor10": "floor10",
    "fanout": "floor10",
    "fanout-quiet": "floor10",
    "floor-paced": "floor-paced",
    "paced": "floor-paced",
    "floor10-paced": "floor10-paced",
    "fanout-paced": "floor10-paced",
}
"""The floor each case is compared with (the one-handler floor unless named here)."""
FULL = [
    "floor",
    "eventbus",
    "eventbus-quiet",
    "floor10",
    "fanout",
    "fanout-quiet",
    "routing",
    "policies",
    "floor-paced",
    "paced",
    "floor10-paced",
    "fanout-paced",
    "pyee",
    "blinker",
    "bubus",
    "pyventus",
]
QUICK = ["eventbus"]
N = 20_000
N_QUICK = 2_000
SHORT = {"bubus": 50, "floor-paced": 5_000, "paced": 5_000, "floor10-paced": 5_000, "fanout-paced": 5_000}
"""Cases that get fewer events: bubus spends milliseconds per event and slows as
its history grows; a paced event costs several event-loop turns."""
N_PROFILE = 5_000
"""Events for ``--profile`` (tracing every bytecode is slow)."""
COLLECTED = re.compile(r"^==\d+== Collected : (\d+)$", re.MULTILINE)


class ValgrindMissing(RuntimeError):
    """valgrind is not on PATH."""


def interpreter() -> str:
    """The real Python binary behind ``sys.executable`` (a venv's or pyenv's symlinks resolved)."""
    return os.path.realpath(sys.executable)


def count_instructions(argv: list[str], out: str = "/dev/null") -> int:
    """Instructions callgrind counted for the whole of ``argv`` (valgrind prefixed);
    ``out``: where callgrind writes its per-function profile."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise ValgrindMissing(
            "valgrind is not installed: the instruction counts need it (apt-get install valgrind); "
            "benchmarks/throughput.py measures without it"
        )
    # The real binary does not read the venv's pyvenv.cfg, so hand it this interpreter's import path.
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run(
        [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{' '.join(argv)} failed under valgrind (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_event(full: int, empty: int, build_full: int, build_empty: int, n: int) -> float:
    """Instructions per event: (N events - 0 events) - (building N events - building 0), over N."""
    return ((full - empty) - (build_full - build_empty)) / n


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    n: int
    instructions: float


def table(rows: list[Row]) -> str:
    """The report: instructions per event, ratio to the floor, target and whether it is met."""
    by_key = {row.key: row for row in rows}
    width = max(len(row.label) for row in rows) + 2
    lines = [f"{'case':<{width}}{'N':>7}{'instr/event':>13}{'x floor':>9}   target", "-" * (width + 45)]
    for row in rows:
        floor = by_key.get(FLOOR_OF.get(row.key, "floor"))
        ratio = f"{row.instructions / floor.instructions:9.1f}" if floor is not None else f"{'':>9}"
        target = TARGETS.get(row.key)
        verdict = "" if target is None else f"{target:,} {'met' if row.instructions <= target else 'not met'}"
        lines.append(f"{row.label:<{width}}{row.n:>7,}{row.instructions:>13,.0f}{ratio}   {verdict}")
    return "\n".join(lines)


def measure(keys: list[str], n: int, workers: int) -> list[Row]:
    """Run every process the cases need (build runs shared by cases that build alike), ``workers`` at a time."""
    script = str(Path(__file__).resolve())
    sizes = {key: min(n, SHORT.get(key, n)) for key in keys}

    def child(key: str, size: int, *, bus: bool) -> list[str]:
        return [interpreter(), script, "--child", key, str(size), *([] if bus else ["--no-bus"])]

    runs: dict[tuple[str, int, bool], list[str]] = {}
    for key in keys:
        builder = _cases.CASES[key].build.__name__
        for size in (sizes[key], 0):
            runs[(key, size, True)] = child(key, size, bus=True)
            runs.setdefault((builder, size, False), child(key, size, bus=False))
    with ThreadPoolExecutor(workers) as pool:
        counts = dict(zip(runs, pool.map(count_instructions, runs.values()), strict=True))
    rows = []
    for key in keys:
        builder, size = _cases.CASES[key].build.__name__, sizes[key]
        value = per_event(
            counts[(key, size, True)],
            counts[(key, 0, True)],
            counts[(builder, size, False)],
            counts[(builder, 0, False)],
            size,
        )
        rows.append(Row(key, _cases.CASES[key].label, size, value))
    return rows


def profile(key: str, n: int, workers: int) -> str:
    """Where case ``key``'s instructions go, per event: bytecodes by Python function, instructions by C function."""
    script = str(Path(__file__).resolve())
    runs = {
        (size, bus): [interpreter(), script, "--child", key, str(size), *([] if bus else ["--no-bus"])]
        for size in (n, 0)
        for bus in (True, False)
    }
    with tempfile.TemporaryDirectory() as directory, ThreadPoolExecutor(workers) as pool:
        outs = {run: str(Path(directory) / f"callgrind.{run[0]}.{run[1]}") for run in runs}
        list(pool.map(count_instructions, runs.values(), outs.values()))
        c = {run: _profile.c_functions(out) for run, out in outs.items()}
    by_c = _profile.per_event(c[(n, True)], c[(0, True)], c[(n, False)], c[(0, False)], n)
    python = _profile.bytecodes(key, n)
    return (
        f"{_cases.CASES[key].label}, N = {n:,}\n\n"
        f"bytecodes per event, by Python function:\n{_profile.top(python, 15)}\n\n"
        f"instructions per event, by C function (callgrind):\n{_profile.top(by_c, 25)}\n\n"
        f"the same, by what the C functions are part of:\n{_profile.top(_profile.kinds(by_c), 10)}"
    )


def child_main(key: str, n: int, bus: bool) -> None:
    """One measured process: build ``n`` events, then deliver them unless ``bus`` is false."""
    case = _cases.CASES[key]
    events = case.build(n)
    if bus:
        asyncio.run(case.measure(events, _cases.NoClock()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help=f"the one-handler eventbus case only, N = {N_QUICK:,} (CI)"
    )
    parser.add_argument(
        "--case",
        action="append",
        choices=sorted(_cases.CASES),
        help="measure only this case (repeatable; floors are not added); default: the full list",
    )
    parser.add_argument("-n", type=int, help=f"events per case (default {N:,}; {N_QUICK:,} with --quick)")
    parser.add_argument(
        "--profile",
        metavar="CASE",
        choices=sorted(_cases.CASES),
        help=f"where CASE's instructions go, by Python and by C function (N = {N_PROFILE:,} unless -n)",
    )
    parser.add_argument("--workers", type=int, default=2, help="valgrind processes at a time (default 2)")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--no-bus", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child[0], int(args.child[1]), bus=not args.no_bus)
        return
    keys, n = (QUICK, N_QUICK) if args.quick else (FULL, N)
    keys = args.case or keys
    n = args.n or n
    try:
        if args.profile:
            print(profile(args.profile, args.n or N_PROFILE, args.workers))
            return
        print(f"eventbus instruction counts (valgrind callgrind, {interpreter()}, N = {n:,} events per case)\n")
        rows = measure(keys, n, args.workers)
    except ValgrindMissing as exc:
        sys.exit(str(exc))
    print(table(rows))


if __name__ == "__main__":
    main()
