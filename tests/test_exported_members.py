"""The public surface: ``eventbus.__all__`` is sorted and complete, every name
in it resolves, and every public name and method is documented; so is every
name ``eventbus.store`` exports for store authors, and the bundled plugins
import store names from it (or from the public ``eventbus.store.codec``), as a
third party's store would."""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import pkgutil
import re
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import pytest

import eventbus
import eventbus.store
from eventbus import Store

PACKAGE = Path(eventbus.__file__).parent
PLUGIN_SOURCES = sorted(PACKAGE.parent.glob("plugins/*/eventbus_*/*.py"))
PUBLIC_STORE_MODULES = {"eventbus.store", "eventbus.store.codec"}


def _modules() -> list[ModuleType]:
    """Every module of the core package (the CLI and testing kit included)."""
    names = [info.name for info in pkgutil.walk_packages([str(PACKAGE)], prefix="eventbus.")]
    return [eventbus, *(importlib.import_module(name) for name in names if not name.endswith("__main__"))]


def _attribute_docstrings() -> dict[str, str]:
    """Module-level ``NAME = ...`` assignments followed by a string literal, by name."""
    documented: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        body = ast.parse(path.read_text(), str(path)).body
        for statement, following in itertools.pairwise(body):
            targets = statement.targets if isinstance(statement, ast.Assign) else [getattr(statement, "target", None)]
            if not (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)):
                continue
            if not isinstance(following.value.value, str):
                continue
            for target in targets:
                if isinstance(target, ast.Name):
                    documented[target.id] = following.value.value
    return documented


def test_all_is_sorted_with_a_plain_case_sensitive_sort() -> None:
    # every public name is CamelCase, so this is also the order ruff's RUF022
    # (isort-style) wants
    assert eventbus.__all__ == sorted(eventbus.__all__)
    assert len(set(eventbus.__all__)) == len(eventbus.__all__)


def test_every_name_in_all_resolves() -> None:
    for name in eventbus.__all__:
        assert getattr(eventbus, name) is not None, name


def test_every_public_class_or_function_of_the_package_is_exported() -> None:
    exported = {getattr(eventbus, name) for name in eventbus.__all__}
    public_here = {
        value
        for name, value in vars(eventbus).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public_here <= exported


@pytest.mark.parametrize("module", _modules(), ids=lambda module: module.__name__)
def test_each_modules_all_is_sorted_and_resolves(module: ModuleType) -> None:
    names = getattr(module, "__all__", None)
    if names is None:
        return
    assert list(names) == sorted(names)
    for name in names:
        assert hasattr(module, name), f"{module.__name__}.__all__ names {name!r}, which it does not define"


def test_the_exported_classes_come_from_the_package() -> None:
    for name in eventbus.__all__:
        value = getattr(eventbus, name)
        if inspect.isclass(value):
            assert value.__module__.startswith("eventbus."), name


def test_every_exported_name_has_a_docstring() -> None:
    attribute_docs = _attribute_docstrings()
    undocumented = []
    for name in eventbus.__all__:
        value = getattr(eventbus, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
        else:
            doc = attribute_docs.get(name)  # a type alias: documented where it is assigned
        if not (doc and doc.strip()):
            undocumented.append(name)
    assert undocumented == []


def test_every_name_exported_for_store_authors_is_documented() -> None:
    attribute_docs = _attribute_docstrings()
    undocumented = []
    for name in eventbus.store.__all__:
        value = getattr(eventbus.store, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
        else:
            doc = attribute_docs.get(name)  # a constant or a type alias: documented where it is assigned
        if not (doc and doc.strip()):
            undocumented.append(name)
    assert undocumented == []


def test_the_plugins_import_store_names_from_the_public_modules() -> None:
    assert PLUGIN_SOURCES
    reaching_in = []
    for path in PLUGIN_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eventbus.store")):
                continue
            names = {alias.name for alias in node.names}
            if node.module not in PUBLIC_STORE_MODULES or (
                node.module == "eventbus.store" and not names <= set(eventbus.store.__all__)
            ):
                reaching_in.append(f"{path.name}: from {node.module} import {', '.join(sorted(names))}")
    assert reaching_in == []


STORE_METHODS = {name: value for name, value in vars(Store).items() if inspect.isfunction(value)}


def _documented_by_protocol(cls: type, name: str) -> bool:
    """A store's method is documented by the `Store` protocol method it implements."""
    implements_store = all(callable(getattr(cls, method, None)) for method in STORE_METHODS)
    return implements_store and name in STORE_METHODS and bool(STORE_METHODS[name].__doc__)


def _listed_in_class_doc(cls: type, name: str) -> bool:
    """A property may be described in its class's ``Attributes:`` section instead."""
    return re.search(rf"^\s+{re.escape(name)}\b", inspect.getdoc(cls) or "", re.MULTILINE) is not None


def test_every_public_method_and_property_of_an_exported_class_is_documented() -> None:
    undocumented = []
    for name in eventbus.__all__:
        cls = getattr(eventbus, name)
        if not inspect.isclass(cls) or issubclass(cls, BaseException):
            continue
        for attr, value in vars(cls).items():
            if attr.startswith(("_", "model_")):
                continue
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if not (inspect.isfunction(func) or isinstance(value, property)):
                continue
            if func.__doc__ or _documented_by_protocol(cls, attr) or _listed_in_class_doc(cls, attr):
                continue
            undocumented.append(f"{name}.{attr}")
    assert undocumented == []


def test_the_version_matches_the_installed_distribution() -> None:
    assert eventbus.__version__ == version("eventbus")
