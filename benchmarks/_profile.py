"""Where a case's instructions go: Python bytecodes per function, C instructions per function.

callgrind names CPython's C functions (the evaluation loop, allocation, the
garbage collector, context variables), and counts Python functions only as
part of the evaluation loop; a trace of every bytecode names eventbus's own
functions. ``instructions.py --profile CASE`` prints both, per event, with
the same subtraction as its counts: a run with 0 events (and, for callgrind,
the building of the events) taken away.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import _cases

_ANNOTATED = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(.*?)(?:\s+\[.*\])?$")
_RECURSION = re.compile(r"'\d+$")
"""callgrind's suffix for a recursion level (``_PyEval_EvalFrameDefault'2``)."""


def bytecodes(key: str, n: int) -> dict[str, float]:
    """Bytecodes executed per event by each Python function (``file:function``) for case ``key``."""

    def run(count: int) -> Counter[str]:
        case = _cases.CASES[key]
        events = case.build(count)
        counts: Counter[str] = Counter()

        def trace(frame: FrameType, event: str, arg: Any) -> Any:
            frame.f_trace_opcodes = True
            if event == "opcode":
                code = frame.f_code
                counts[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
            return trace

        async def traced() -> None:
            sys.settrace(trace)
            try:
                await case.measure(events, _cases.NoClock())
            finally:
                sys.settrace(None)

        asyncio.run(traced())
        return counts

    full, empty = run(n), run(0)
    return {name: (full[name] - empty.get(name, 0)) / n for name in full}


def c_functions(path: str) -> Counter[str]:
    """Instructions by C function (``file:function``, recursion levels merged) in a callgrind output file."""
    done = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True, check=True)
    counts: Counter[str] = Counter()
    for line in done.stdout.splitlines():
        found = _ANNOTATED.match(line)
        if found is None or "PROGRAM TOTALS" in line:
            continue
        where, _, function = found.group(2).rpartition(":")
        function = _RECURSION.sub("", function)
        counts[f"{Path(where).name}:{function}"] += int(found.group(1).replace(",", ""))
    return counts


def per_event(
    full: Mapping[str, int],
    empty: Mapping[str, int],
    build_full: Mapping[str, int],
    build_empty: Mapping[str, int],
    n: int,
) -> dict[str, float]:
    """Per function, the same subtraction as `instructions.per_event`."""
    names = set(full) | set(empty)
    return {
        name: ((full.get(name, 0) - empty.get(name, 0)) - (build_full.get(name, 0) - build_empty.get(name, 0))) / n
        for name in names
    }


_KINDS: list[tuple[str, Callable[[str, str], bool]]] = [
    ("bytecode evaluation", lambda file, function: function == "_PyEval_EvalFrameDefault"),
    (
        "garbage collector",
        lambda file, function: file == "gcmodule.c" or function.endswith("_traverse") or function.startswith("visit_"),
    ),
    ("memory allocation", lambda file, function: file == "obmalloc.c"),
    ("coroutines and frames", lambda file, function: file in ("genobject.c", "frame.c")),
    ("context variables", lambda file, function: file in ("hamt.c", "context.c")),
    ("integers", lambda file, function: file == "longobject.c"),
]
"""What each C function is part of, first match (the rest: attribute lookups, calls, containers, ...)."""


def kinds(values: Mapping[str, float]) -> dict[str, float]:
    """``c_functions`` per event summed by what the functions are part of (`_KINDS`)."""
    summed: dict[str, float] = dict.fromkeys([kind for kind, _ in _KINDS] + ["everything else"], 0.0)
    for name, value in values.items():
        file, _, function = name.partition(":")
        kind = next((kind for kind, matches in _KINDS if matches(file, function)), "everything else")
        summed[kind] += value
    return summed


def top(values: Mapping[str, float], count: int) -> str:
    """The ``count`` largest values, one per line, and their sum over every function."""
    lines = [f"{value:>10,.0f}  {name}" for name, value in sorted(values.items(), key=lambda kv: -kv[1])[:count]]
    lines.append(f"{sum(values.values()):>10,.0f}  (every function)")
    return "\n".join(lines)
