"""mypy and pyright report the mistakes of ``tests/typing/expected_errors.py``.

That file marks each line that must fail with ``# type: ignore[<mypy code>]
# pyright reports <rule>``. Here a copy without those comments is checked
beside the file itself, in one run of each checker (``mypy --strict`` with
the repository's configuration, pyright strict by the file's own comment):
the copy must get exactly the marked mypy code on each marked line and the
marked pyright rule among pyright's, and nothing on any other line; the file
itself, ignores in place, must be clean. So the suite fails the day a
signature lets one of these mistakes through, and the day a marked line
starts failing for some other reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKED = ROOT / "tests" / "typing" / "expected_errors.py"
MARK = re.compile(r"  # type: ignore\[(?P<mypy>[\w-]+)\]  # pyright reports (?P<pyright>\w+)$")
MYPY_ERROR = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: .*  \[(?P<code>[\w-]+)\]$")
TIMEOUT = 300.0  # seconds per checker; a cold mypy cache takes the most, well under a minute

Findings = dict[Path, dict[int, set[str]]]


def _marks() -> dict[int, tuple[str, str]]:
    """line number -> (mypy code, pyright rule) for each marked line."""
    lines = MARKED.read_text(encoding="utf-8").splitlines()
    return {
        number: (match["mypy"], match["pyright"])
        for number, line in enumerate(lines, start=1)
        if (match := MARK.search(line))
    }


@pytest.fixture(scope="module")
def unmarked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``expected_errors.py`` without its ignore comments, under another module name."""
    path = tmp_path_factory.mktemp("typing") / "expected_errors_unmarked.py"
    lines = MARKED.read_text(encoding="utf-8").splitlines()
    path.write_text("".join(MARK.sub("", line) + "\n" for line in lines), encoding="utf-8")
    return path


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def _mypy(paths: list[Path], cache: Path) -> Findings:
    config = ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(cache)]
    output = ["--no-error-summary", "--show-error-codes", "--no-pretty"]
    result = _run([sys.executable, "-m", "mypy", *config, *output, *map(str, paths)], ROOT)
    findings: Findings = defaultdict(lambda: defaultdict(set))
    for line in result.stdout.splitlines():
        if match := MYPY_ERROR.match(line):
            findings[(ROOT / match["path"]).resolve()][int(match["line"])].add(match["code"])
        elif ": note: " not in line:
            pytest.fail(f"unexpected mypy output:\n{result.stdout}{result.stderr}")
    return findings


def _pyright(paths: list[Path]) -> Findings:
    result = _run(
        [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable, *map(str, paths)], ROOT
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pyright did not report in JSON:\n{result.stdout}{result.stderr}")
    findings: Findings = defaultdict(lambda: defaultdict(set))
    for diagnostic in report["generalDiagnostics"]:
        if diagnostic["severity"] == "error":
            line = diagnostic["range"]["start"]["line"] + 1
            findings[Path(diagnostic["file"]).resolve()][line].add(diagnostic.get("rule", diagnostic["message"]))
    return findings


def test_the_file_marks_the_mistakes_it_is_for() -> None:
    marked = {mypy for mypy, _ in _marks().values()}
    assert {"arg-type", "attr-defined"} <= marked  # a handler of the wrong type; a misspelt field in where=


def test_mypy_reports_each_marked_mistake_and_nothing_else(unmarked: Path, tmp_path: Path) -> None:
    findings = _mypy([MARKED, unmarked], tmp_path / "mypy_cache")
    assert dict(findings.get(MARKED, {})) == {}
    reported = dict(findings.get(unmarked.resolve(), {}))
    assert reported == {line: {mypy} for line, (mypy, _) in _marks().items()}


def test_pyright_reports_each_marked_mistake_and_nothing_else(unmarked: Path) -> None:
    findings = _pyright([MARKED, unmarked])
    assert dict(findings.get(MARKED, {})) == {}
    reported = findings.get(unmarked.resolve(), {})
    missing = {line: rule for line, (_, rule) in _marks().items() if rule not in reported.get(line, set())}
    assert missing == {}, f"pyright did not report these: {missing}; it reported {dict(reported)}"
    assert set(reported) == set(_marks()), f"pyright reported errors on unmarked lines: {dict(reported)}"
