"""Each piece of mutable state has one owner: a module writes only attributes
that a class of its own declares (docs/concepts/architecture.md, "Who owns
what").

An attribute is *declared* by a class when the class body annotates or
assigns it, names it in ``__slots__``, or its ``__init__`` assigns
``self.<name>``. Every attribute write in a checked module (``x.name = ...``,
``x.name += ...``, ``del x.name``), whatever ``x`` is, ``self`` included,
must name an attribute that a class of the same module declares: a module
that wants another object's state changed calls that object's verbs. A
subclass writing what its base class declares elsewhere fails too.

The check reads names, not types, so it is a net with a fine mesh rather
than a proof: two classes in different modules declaring the same name would
hide each other. `test_the_check_catches_a_foreign_write` shows that it bites.
"""

from __future__ import annotations

import ast
from pathlib import Path

import eventbus

PACKAGE = Path(eventbus.__file__).parent

CHECKED = [
    *sorted((PACKAGE / "delivery").glob("*.py")),
    *sorted((PACKAGE / "middleware").glob("*.py")),
    *sorted((PACKAGE / "deadletters").glob("*.py")),
    PACKAGE / "_context.py",
    PACKAGE / "publishing.py",
    PACKAGE / "routing.py",
    PACKAGE / "bus.py",
    PACKAGE / "subscription.py",
]
"""The modules of the publishing and delivery paths, where the state that
matters most lives. (Elsewhere: a store numbers the records it appends, as
the `Store` contract asks, and `TestBus` swaps the bus's public ``store``.)"""


def _declared(tree: ast.Module) -> set[str]:
    """The attribute names the module's classes declare."""
    names: set[str] = set()
    for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
        for item in cls.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                names.add(item.target.id)
            elif isinstance(item, ast.Assign):
                for target in item.targets:
                    if isinstance(target, ast.Name):
                        names.add(target.id)
                        if target.id == "__slots__" and isinstance(item.value, (ast.Tuple, ast.List)):
                            names.update(
                                elt.value
                                for elt in item.value.elts
                                if isinstance(elt, ast.Constant) and isinstance(elt.value, str)
                            )
            elif isinstance(item, ast.FunctionDef) and item.name == "__init__":
                for node in ast.walk(item):
                    for target in _attribute_targets(node):
                        if isinstance(target.value, ast.Name) and target.value.id == "self":
                            names.add(target.attr)
    return names


def _attribute_targets(node: ast.AST) -> list[ast.Attribute]:
    if isinstance(node, ast.Assign):
        targets = [t for target in node.targets for t in _flatten(target)]
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    elif isinstance(node, ast.Delete):
        targets = list(node.targets)
    elif isinstance(node, ast.NamedExpr):
        targets = [node.target]
    else:
        return []
    return [target for target in targets if isinstance(target, ast.Attribute)]


def _flatten(target: ast.expr) -> list[ast.expr]:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [t for elt in target.elts for t in _flatten(elt)]
    return [target]


def foreign_writes(source: str) -> list[str]:
    """``line: target`` for each attribute write of ``source`` that no class of it declares."""
    tree = ast.parse(source)
    declared = _declared(tree)
    return [
        f"{target.lineno}: {ast.unparse(target)}"
        for node in ast.walk(tree)
        for target in _attribute_targets(node)
        if target.attr not in declared
    ]


def test_no_checked_module_writes_an_attribute_it_does_not_own() -> None:
    offences = {
        str(path.relative_to(PACKAGE)): found
        for path in CHECKED
        if (found := foreign_writes(path.read_text(encoding="utf-8")))
    }
    assert not offences, f"attribute writes to state another module owns: {offences}"


def test_the_check_catches_a_foreign_write() -> None:
    source = """
class Run:
    def __init__(self, inbox):
        self.inbox = inbox
        self.position = 0

    def work(self):
        self.position += 1
        self.inbox.delivering = None
"""
    assert foreign_writes(source) == ["9: self.inbox.delivering"]


def test_a_subclass_writing_its_base_classes_state_is_caught() -> None:
    source = """
from elsewhere import Publisher

class Bus(Publisher):
    def __init__(self):
        self.state = None

    def start(self):
        self.state = "running"
        self._head = 0
"""
    assert foreign_writes(source) == ["10: self._head"]
