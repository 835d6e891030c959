"""Layers point one way: no module of ``eventbus`` imports one above it, not
even under ``TYPE_CHECKING`` (docs/concepts/architecture.md draws the layers).

Every ``import`` and ``from ... import`` statement of the package is parsed,
wherever it stands; an edge from a module to one in a higher layer, or to a
module missing from `LAYERS`, fails the test with the edge named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import eventbus

PACKAGE = Path(eventbus.__file__).parent

LAYERS: list[list[str]] = [
    ["exceptions", "failures", "_ids", "_log", "_stop", "_testmode", "_weak", "policies", "asyncio_runner"],
    ["event"],
    ["record"],
    ["_entry"],
    ["_context", "deadletters.letter", "stats", "transaction"],
    ["store.retention"],
    ["store.base", "store.codec", "handler"],
    ["store.memory"],
    ["store.url"],
    ["store"],
    ["deadletters._bury"],
    ["deadletters._redrive"],
    ["deadletters"],
    ["middleware.base"],
    ["middleware.retry", "middleware.timeout"],
    ["middleware"],
    ["delivery.options", "delivery.recovery"],
    ["delivery.inbox"],
    ["delivery.catchup", "delivery.checkpoints", "delivery.lease", "delivery.pipeline"],
    ["delivery.projection"],
    ["delivery.workers"],
    ["delivery"],
    ["subscription", "replay", "plugins", "projection", "_sqlalchemy"],
    ["routing"],
    ["publishing"],
    ["bus"],
    ["testing.conformance", "testing._recording", "testing._collector"],
    ["testing.testbus"],
    ["testing"],
    [""],
    ["otel"],
    ["cli._common", "cli._loader", "cli._progress", "cli._version", "cli.asyncapi"],
    ["cli.demo", "cli.deadletters", "cli.history", "cli.stats", "cli.catalog", "cli.compact", "cli.projection"],
    ["cli.trace"],
    ["cli._app"],
    ["cli"],
    ["cli.__main__"],
]
"""The modules of ``eventbus`` from the lowest layer up (``""`` is the package itself).
A module may import modules of lower layers only."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(path: Path, module: str) -> set[str]:
    """The ``eventbus`` modules that ``path`` imports (relative to the package)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if module else []
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join([*base, *([node.module] if node.module else [])])
                names = [f"eventbus.{prefix}".rstrip(".")]
                names += [f"eventbus.{prefix}.{alias.name}".replace("..", ".") for alias in node.names]
            else:
                names = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "eventbus" or name.startswith("eventbus."):
                found.add(name.removeprefix("eventbus").removeprefix("."))
    return found


def test_every_import_points_down_the_layers() -> None:
    rank = {module: index for index, layer in enumerate(LAYERS) for module in layer}
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    unlisted = sorted(set(modules) - set(rank))
    assert not unlisted, f"modules missing from LAYERS: {unlisted}"
    upward: list[str] = []
    for module, path in sorted(modules.items()):
        for target in sorted(_imported(path, module)):
            if target not in modules:
                continue  # a name imported from a module, not a module
            if target != module and rank[target] >= rank[module]:
                upward.append(f"{module or 'eventbus'} -> {target or 'eventbus'}")
    assert not upward, "imports that do not point down the layers:\n" + "\n".join(upward)


ENTRY_MODULES = {"_context", "delivery.inbox", "delivery.workers", "publishing", "store.base", "store.memory"}
"""The modules that make, carry or deliver entries, the compact form of a
record (see eventbus._entry); everything else sees `Record` objects."""


def test_the_entry_form_stays_among_the_modules_that_carry_it() -> None:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    importers = sorted(module for module, path in modules.items() if "_entry" in _imported(path, module))
    assert set(importers) <= ENTRY_MODULES, (
        f"modules importing eventbus._entry beyond {sorted(ENTRY_MODULES)}: {importers}"
    )
