"""The documentation's code samples run, and its nav matches its pages.

Collected samples: every fenced ```python block in ``README.md`` and
``docs/**/*.md`` that is a complete program, i.e. contains ``anyio.run(`` or
``asyncio.run(``, or a complete pytest module (it imports pytest and defines
a ``test_`` function). Each runs as a real process (``sys.executable``, or
``sys.executable -m pytest`` on the sample saved as a test module) with the
test's ``tmp_path`` as its working directory, so any file a sample writes
(a SQLite store, say) lands there and never in the repository. It must exit
with status 0 and print no traceback; it runs with ``-W error``, so a
warning fails it, as it would any test of the suite. ``examples/`` is on its
``PYTHONPATH``, so a sample may import the example programs
(``from fastapi_service import create_app``).

Left out by design (never collected, so never skipped):

- fragments without ``anyio.run(``/``asyncio.run(`` or tests, which continue
  a program shown earlier on the page;
- programs that import a module of their own that the page only describes
  (``from shop import ...`` and the like): see `IMPORTABLE`.

When the block right after a sample is a ```console or ```text block, the
sample's output must contain each line of it that `_key_lines` keeps
(stripped of whitespace, shell prompts, and lines that vary between runs).

The second half checks ``mkdocs.yml``: every page in its ``nav`` exists, and
every ``docs/**/*.md`` page is in the ``nav``. The ``test`` extra does not
install PyYAML, so the nav entries are found with a regex.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
TIMEOUT = 60.0  # seconds per sample; each one finishes in well under one
RUN_MARKERS = ("anyio.run(", "asyncio.run(")
TEST_FUNCTION = re.compile(r"^(?:async )?def test_\w+\(", re.M)
# Top-level modules a sample may import: anything else is a module of the
# sample's own (``shop``, ``myapp``) that the page does not ship.
IMPORTABLE = (
    frozenset(sys.stdlib_module_names)
    | {
        "anyio",
        "eventbus",
        "eventbus_sqlite",
        "eventbus_postgres",
        "fastapi",
        "opentelemetry",
        "httpx2",
        "pydantic",
        "pytest",
        "sqlalchemy",
        "structlog",
        "trio",
    }
    | {path.stem for path in EXAMPLES.glob("*.py")}
)
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
IMPORT = re.compile(r"^\s*(?:from\s+(?P<from>[\w.]+)\s+import|import\s+(?P<imports>[\w., ]+))", re.M)
# Output lines that legitimately differ from run to run.
VOLATILE = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}|0x[0-9a-f]+|\b[0-9a-f]{32}\b")
# Durations and backoff delays (``retry_in=0.0106``, ``'seconds': 0.01``)
# are compared as "some decimal number".
DECIMAL = re.compile(r"\d+\.\d+(?:e-?\d+)?")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page.

    Attributes:
        lang: the info string's language (``python``, ``console``, ...).
        line: 1-based line of the opening fence.
        code: the block's text, dedented by the fence's indentation.
    """

    lang: str
    line: int
    code: str


@dataclass(frozen=True)
class Sample:
    """A complete program found in the docs, with the output the page shows."""

    page: str
    line: int
    code: str
    expected: str | None
    is_test: bool = False


def _blocks(text: str) -> list[Block]:
    """Return the fenced code blocks of a Markdown text, in order."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence, lang = match["indent"], match["fence"], match["lang"].lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        blocks.append(Block(lang=lang, line=start + 1, code="\n".join(body) + "\n"))
        i += 1
    return blocks


def _imports(code: str) -> set[str]:
    """Return the top-level module names a program imports."""
    names: set[str] = set()
    for match in IMPORT.finditer(code):
        if match["from"]:
            names.add(match["from"].split(".")[0])
        else:
            names.update(part.split()[0].split(".")[0] for part in match["imports"].split(",") if part.strip())
    names.discard("")
    return names


def _needs_own_module(code: str) -> bool:
    """Whether a sample imports a module of its own that the docs do not ship."""
    return not _imports(code) <= IMPORTABLE


def _pages() -> list[Path]:
    return sorted([ROOT / "README.md", *DOCS.rglob("*.md")])


def _samples() -> list[Sample]:
    samples: list[Sample] = []
    for path in _pages():
        blocks = _blocks(path.read_text(encoding="utf-8"))
        for index, block in enumerate(blocks):
            if block.lang not in ("python", "py", "python3"):
                continue
            page = path.relative_to(ROOT).as_posix()
            code = block.code
            is_test = "pytest" in _imports(code) and TEST_FUNCTION.search(code) is not None
            if not (is_test or any(marker in code for marker in RUN_MARKERS)) or _needs_own_module(code):
                continue
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            expected = following.code if following and following.lang in ("console", "text") else None
            samples.append(Sample(page, block.line, code, expected, is_test))
    return samples


def _key_lines(shown: str) -> list[str]:
    """The lines of a shown output worth asserting on."""
    keys: list[str] = []
    for raw in shown.splitlines():
        line = raw.strip()
        if not line or line.startswith(("$", "#", "...", "…", ">>>")) or VOLATILE.search(line):
            continue
        keys.append(_normalise(line))
    return keys


def _normalise(line: str) -> str:
    """A line with runs of whitespace collapsed and decimal numbers masked."""
    return DECIMAL.sub("<decimal>", " ".join(line.split()))


SAMPLES = _samples()


def test_some_samples_are_collected() -> None:
    """Guard against the scanner silently finding nothing."""
    assert len(SAMPLES) >= 10, [f"{s.page}:{s.line}" for s in SAMPLES]


def test_the_readme_example_runs_as_written_and_its_output_is_checked() -> None:
    """The README's example is a complete program (not a fragment the scanner skips), with its output shown."""
    readme = [sample for sample in SAMPLES if sample.page == "README.md"]
    assert readme, "README.md's example is not collected: is it still a complete program?"
    assert all(sample.expected for sample in readme), "README.md's example shows no output to check"


def test_pytest_samples_are_collected() -> None:
    """The testing guides' pytest modules are run, not skipped as fragments."""
    assert {sample.page for sample in SAMPLES if sample.is_test} >= {"docs/guide/testing.md", "docs/guide/fastapi.md"}


@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{s.page}:{s.line}" for s in SAMPLES])
def test_sample_runs(sample: Sample, tmp_path: Path) -> None:
    """A documented program exits cleanly and prints what its page shows."""
    script = tmp_path / ("test_sample.py" if sample.is_test else "sample.py")
    script.write_text(sample.code, encoding="utf-8")
    # warnings are errors, as in the suite; a test sample runs under pytest, without the suite's config
    command = [str(script)]
    if sample.is_test:
        command = ["-m", "pytest", "-W", "error", "-p", "no:cacheprovider", script.name]
    python_path = os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-W", "error", *command],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": python_path},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    where = f"{sample.page}:{sample.line}"
    assert result.returncode == 0, f"{where} exited {result.returncode}\n{result.stderr}"
    assert "Traceback (most recent call last)" not in result.stderr, f"{where}\n{result.stderr}"
    if sample.expected is not None:
        output = {_normalise(line) for line in (result.stdout + result.stderr).splitlines()}
        missing = [line for line in _key_lines(sample.expected) if line not in output]
        assert not missing, f"{where}: output lacks {missing}\n--- stdout ---\n{result.stdout}"


def _nav_pages() -> list[str]:
    """The Markdown paths listed in mkdocs.yml's ``nav`` section."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = re.search(r"^nav:\s*\n((?:[ \t]+.*\n|\s*\n)+)", text, re.M)
    assert nav is not None, "mkdocs.yml has no nav section"
    return re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", nav[1], re.M)


def test_nav_pages_exist() -> None:
    """Every page the nav lists is a file under docs/."""
    pages = _nav_pages()
    assert pages, "no pages found in mkdocs.yml nav"
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"nav lists missing pages: {missing}"
    assert len(pages) == len(set(pages)), "a page is listed twice in the nav"


def test_every_page_is_in_nav() -> None:
    """Every Markdown page under docs/ is reachable from the nav."""
    listed = set(_nav_pages())
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert pages - listed == set(), f"pages missing from the nav: {sorted(pages - listed)}"


@pytest.mark.parametrize("module_name", ["eventbus", "eventbus_sqlite", "eventbus_postgres", "eventbus_nats"])
def test_the_reference_lists_every_public_name(module_name: str) -> None:
    """Every name in the ``__all__`` of the core and of each plugin has its ``:::`` entry in docs/reference/."""
    listed = {
        name
        for page in (DOCS / "reference").glob("*.md")
        for name in re.findall(r"^::: (\S+)", page.read_text(encoding="utf-8"), re.M)
    }
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if f"{module_name}.{name}" not in listed]
    assert not missing, f"docs/reference/ lacks {module_name}: {missing}"
