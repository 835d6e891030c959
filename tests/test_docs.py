"""Every Python block of the documentation runs in a test or is marked as a fragment; the nav matches the pages.

Every fenced ```python block in ``README.md`` and ``docs/**/*.md`` is one of:

- **a complete program**: it contains ``anyio.run(`` or ``asyncio.run(``,
  or it is a complete pytest module (it imports pytest and defines a
  ``test_`` function). Each runs as a real process (``sys.executable``, or
  ``sys.executable -m pytest`` on the sample saved as a test module) with the
  test's ``tmp_path`` as its working directory, so any file a sample writes
  (a SQLite store, say) lands there and never in the repository. It must
  exit with status 0 and print no traceback; it runs with ``-W error``, so a
  warning fails it, as it would any test of the suite. ``examples/`` is on
  its ``PYTHONPATH``, so a sample may import the example programs
  (``from fastapi_service import create_app``).
- **a fragment**, marked by the line ``<!-- fragment -->`` right before its
  opening fence (an HTML comment: neither mkdocs nor GitHub shows it). A
  fragment continues a program shown earlier on the page, or shows a piece
  of one (an option, a signature). It must compile (top-level ``await``,
  ``async with`` and ``async for`` allowed, as in a REPL), and every import
  in it must resolve, name for name, except from `READERS_OWN` modules that
  the page asks the reader to write.

A block that is neither fails, so nothing is left out silently; so does a
marked fragment that is a complete program (the marker cannot hide a sample
that should run), and a marker that is not right before a Python block.
A block whose body is a ``--8<-- "path:section"`` line (pymdownx.snippets)
is checked as the text it includes.

When the block right after a sample is a ```console or ```text block, the
sample's output must contain each line of it that `_key_lines` keeps
(stripped of whitespace, shell prompts, and lines that vary between runs).

The second half checks ``mkdocs.yml``: every page in its ``nav`` exists, and
every ``docs/**/*.md`` page is in the ``nav``. The ``test`` extra does not
install PyYAML, so the nav entries are found with a regex. The last test
checks that the API reference has a ``:::`` entry for every public name of
the core and of each plugin.
"""

from __future__ import annotations

import ast
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
PYTHON = ("python", "py", "python3")  # info strings of Python blocks
RUN_MARKERS = ("anyio.run(", "asyncio.run(")
TEST_FUNCTION = re.compile(r"^(?:async )?def test_\w+\(", re.M)
# Modules a fragment imports that the page asks the reader to write: their imports are not resolved.
READERS_OWN = frozenset({"eventbus_mystore"})
FRAGMENT_MARKER = "<!-- fragment -->"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
IMPORT = re.compile(r"^\s*(?:from\s+(?P<from>[\w.]+)\s+import|import\s+(?P<imports>[\w., ]+))", re.M)
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"$')
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
        fragment: a Python block whose fence comes right after `FRAGMENT_MARKER`.
    """

    lang: str
    line: int
    code: str
    fragment: bool = False


@dataclass(frozen=True)
class Sample:
    """A Python block of the docs, with its snippets included and the output the page shows after it."""

    page: str
    line: int
    code: str
    expected: str | None
    fragment: bool

    @property
    def is_test(self) -> bool:
        """A complete pytest module: it imports pytest and defines a test function."""
        return "pytest" in _imports(self.code) and TEST_FUNCTION.search(self.code) is not None

    @property
    def is_program(self) -> bool:
        """A complete program: it runs itself, or it is a pytest module."""
        return self.is_test or any(marker in self.code for marker in RUN_MARKERS)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


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
        fragment = lang in PYTHON and i > 0 and lines[i - 1].strip() == FRAGMENT_MARKER
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        blocks.append(Block(lang=lang, line=start + 1, code="\n".join(body) + "\n", fragment=fragment))
        i += 1
    return blocks


def _stray_markers(text: str) -> list[int]:
    """The 1-based lines of fragment markers that are not right before a Python block's fence."""
    lines = text.splitlines()
    stray: list[int] = []
    for number, line in enumerate(lines, start=1):
        if line.strip() != FRAGMENT_MARKER:
            continue
        fence = FENCE.match(lines[number]) if number < len(lines) else None
        if fence is None or fence["lang"].lower() not in PYTHON:
            stray.append(number)
    return stray


def _include_snippets(code: str) -> str:
    """The code with each ``--8<-- "path:section"`` line replaced by what pymdownx.snippets includes."""
    lines: list[str] = []
    for line in code.splitlines():
        match = SNIPPET.match(line.strip())
        if match is None:
            lines.append(line)
            continue
        included = (ROOT / match["path"]).read_text(encoding="utf-8").splitlines()
        if match["section"]:
            begin = next(i for i, text in enumerate(included) if f"--8<-- [start:{match['section']}]" in text)
            end = next(i for i, text in enumerate(included) if f"--8<-- [end:{match['section']}]" in text)
            included = included[begin + 1 : end]
        lines.extend(text for text in included if "--8<-- [" not in text)
    return "\n".join(lines) + "\n"


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


def _pages() -> list[Path]:
    return sorted([ROOT / "README.md", *DOCS.rglob("*.md")])


def _python_blocks() -> list[Sample]:
    samples: list[Sample] = []
    for path in _pages():
        blocks = _blocks(path.read_text(encoding="utf-8"))
        for index, block in enumerate(blocks):
            if block.lang not in PYTHON:
                continue
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            expected = following.code if following and following.lang in ("console", "text") else None
            page = path.relative_to(ROOT).as_posix()
            samples.append(Sample(page, block.line, _include_snippets(block.code), expected, block.fragment))
    return samples


def _unresolved_imports(tree: ast.AST) -> list[str]:
    """The imports of a fragment that name a module or a name that does not exist."""
    missing: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            wanted = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            wanted = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for module_name, name in wanted:
            if module_name.split(".")[0] in READERS_OWN:
                continue
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                missing.append(module_name)
                continue
            if name is not None and not hasattr(module, name):
                try:
                    importlib.import_module(f"{module_name}.{name}")
                except ImportError:
                    missing.append(f"{module_name}.{name}")
    return missing


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


BLOCKS = _python_blocks()
SAMPLES = [block for block in BLOCKS if block.is_program and not block.fragment]
FRAGMENTS = [block for block in BLOCKS if block.fragment]


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
    pages = {sample.page for sample in SAMPLES if sample.is_test}
    assert pages >= {"docs/guide/testing.md", "docs/guide/fastapi.md", "docs/guide/sync-frameworks.md"}


def test_every_python_block_runs_or_is_marked_as_a_fragment() -> None:
    """No block is left out silently: one that is not a complete program says it is a fragment."""
    unmarked = [block.where for block in BLOCKS if not block.is_program and not block.fragment]
    assert not unmarked, (
        f"these Python blocks neither run nor are marked as fragments: {unmarked}; make each a complete program "
        f"(with anyio.run(...), or a pytest module) or put {FRAGMENT_MARKER} on the line before its fence"
    )


def test_no_complete_program_is_marked_as_a_fragment() -> None:
    """The marker cannot hide a sample that should run."""
    hidden = [block.where for block in FRAGMENTS if block.is_program]
    assert not hidden, f"these blocks are complete programs marked as fragments, so never run: {hidden}"


def test_every_fragment_marker_is_right_before_a_python_block() -> None:
    stray = [
        f"{path.relative_to(ROOT).as_posix()}:{line}"
        for path in _pages()
        for line in _stray_markers(path.read_text(encoding="utf-8"))
    ]
    assert not stray, f"{FRAGMENT_MARKER} is not on the line right before a ```python fence at {stray}"


def test_the_scanner_finds_marked_fragments_indented_or_not() -> None:
    """A marker counts on the line right before the fence only, also inside an admonition or a list."""
    text = "\n".join(
        [
            FRAGMENT_MARKER,
            "```python",
            "await bus.drain()",
            "```",
            "!!! note",
            f"    {FRAGMENT_MARKER}",
            "    ```python",
            "    x = 1",
            "    ```",
            FRAGMENT_MARKER,
            "",
            "```python",
            "y = 2",
            "```",
            FRAGMENT_MARKER,
            "```console",
            "$ ls",
            "```",
        ]
    )
    assert [(block.lang, block.fragment) for block in _blocks(text)] == [
        ("python", True),
        ("python", True),
        ("python", False),
        ("console", False),
    ]
    assert _stray_markers(text) == [10, 15]


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=[block.where for block in FRAGMENTS])
def test_fragment_compiles_and_its_imports_exist(fragment: Sample) -> None:
    """A fragment is valid Python (top-level ``await`` allowed), and what it imports exists."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        compile(fragment.code, fragment.where, "exec", flags=flags, dont_inherit=True)
    except SyntaxError as error:
        pytest.fail(f"{fragment.where}: {error}")
    tree = compile(fragment.code, fragment.where, "exec", flags=flags | ast.PyCF_ONLY_AST, dont_inherit=True)
    missing = _unresolved_imports(tree)
    assert not missing, f"{fragment.where} imports what does not exist: {missing}"


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.where for s in SAMPLES])
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
    where = sample.where
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
