"""The package's layers, which may import which, and no import cycle anywhere.

One table (:data:`ALLOWED`) says which layer may import which; every module of
``src/convex_cdc`` is scanned (imports at module level, inside functions, under
``if TYPE_CHECKING:``, and ``importlib.import_module`` / ``__import__`` with a literal
name). A module belongs to the longest layer name that is a prefix of its own, so a new
top-level package fails :func:`test_every_module_belongs_to_a_layer` until it is added to
the table on purpose. A second table (:data:`FORBIDDEN`) keeps heavy or optional
third-party packages out of the layers that must not need them.

Within the S3/export target the stages run raw → staging → publish: a stage may import
the ones before it and the shared modules at ``target_s3/`` top level, never a later one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import pytest

import convex_cdc

SRC: Final = Path(convex_cdc.__file__).parent
ROOT: Final = "convex_cdc"
"""The package root holds only ``__version__``; it is a layer of its own (exact name)."""

_CORE: Final = frozenset({"convex_cdc.core"})
_S3_SHARED: Final = _CORE | {"convex_cdc.target_s3"}
_S3_RAW: Final = _S3_SHARED | {"convex_cdc.target_s3.raw"}
_S3_STAGING: Final = _S3_RAW | {"convex_cdc.target_s3.staging"}
_S3_ALL: Final = _S3_STAGING | {"convex_cdc.target_s3.publish"}

ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    # layer                              the other layers it may import
    "convex_cdc": frozenset(),  # __version__
    "convex_cdc.logs": _CORE,  # the secret registry lives in core
    "convex_cdc.core": frozenset({ROOT}),  # the client's User-Agent names the version
    "convex_cdc.devserver": frozenset(),  # a stand-in Convex: shares nothing with the client
    "convex_cdc.target_s3": _CORE,  # layout, locks, checkpoint file, table paths, I/O errors
    "convex_cdc.target_s3.raw": _S3_SHARED,
    "convex_cdc.target_s3.staging": _S3_RAW,
    "convex_cdc.target_s3.publish": _S3_STAGING | {ROOT},  # commitInfo names the version
    "convex_cdc.platform": frozenset(),
    "convex_cdc.platform.databricks": frozenset({ROOT, "convex_cdc.core"}),
    "convex_cdc.commands": _S3_ALL
    | {"convex_cdc.platform.databricks", "convex_cdc.devserver", "convex_cdc.logs"},
    "convex_cdc.cli": frozenset(
        {ROOT, "convex_cdc.commands", "convex_cdc.core", "convex_cdc.logs"}
    ),
    "convex_cdc.__main__": frozenset({"convex_cdc.cli"}),
}

_NOT_DEPENDENCIES: Final = frozenset({"boto3", "botocore", "s3fs", "fsspec", "pyspark"})
"""Test-only or Databricks-runtime packages no module of the package may need."""
_UI: Final = frozenset({"click", "rich"})
"""The terminal belongs to the commands."""
_OPTIONAL_S3: Final = frozenset({"obstore"})
"""The ``s3`` extra: only publish needs it, so sync and materialize run without it."""
_OPTIONAL_DELTA: Final = frozenset({"deltalake", "databricks"})
"""The ``databricks`` extra (and the Databricks runtime's SDK)."""
_TARGET_S3: Final = _NOT_DEPENDENCIES | _UI | _OPTIONAL_DELTA | _OPTIONAL_S3

FORBIDDEN: Final[Mapping[str, frozenset[str]]] = {
    "convex_cdc": _NOT_DEPENDENCIES | _UI | _OPTIONAL_DELTA | _OPTIONAL_S3,
    "convex_cdc.logs": _NOT_DEPENDENCIES | _UI | _OPTIONAL_DELTA | _OPTIONAL_S3,
    "convex_cdc.core": _NOT_DEPENDENCIES | _UI | _OPTIONAL_DELTA | _OPTIONAL_S3 | {"pyarrow.fs"},
    "convex_cdc.devserver": _NOT_DEPENDENCIES | _UI | _OPTIONAL_DELTA | _OPTIONAL_S3,
    "convex_cdc.target_s3": _TARGET_S3,
    "convex_cdc.target_s3.raw": _TARGET_S3,
    "convex_cdc.target_s3.staging": _TARGET_S3,
    # Publish also commits each published table to Delta (deltalake is in the s3 extra).
    "convex_cdc.target_s3.publish": _TARGET_S3 - _OPTIONAL_S3 - {"deltalake"},
    "convex_cdc.platform": _NOT_DEPENDENCIES | _UI | _OPTIONAL_DELTA | _OPTIONAL_S3,
    "convex_cdc.platform.databricks": _NOT_DEPENDENCIES | _UI | _OPTIONAL_S3,
    # Commands reach storage through the targets, whose edges turn its errors into one line.
    "convex_cdc.commands": _NOT_DEPENDENCIES | _OPTIONAL_DELTA | _OPTIONAL_S3,
    "convex_cdc.cli": _NOT_DEPENDENCIES | _OPTIONAL_DELTA | _OPTIONAL_S3,
    "convex_cdc.__main__": _NOT_DEPENDENCIES | _UI | _OPTIONAL_DELTA | _OPTIONAL_S3,
}


# --- the scan ---------------------------------------------------------------------------


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, relative imports resolved.

    Counts ``import x``, ``from x import y`` (also ``x.y``, in case ``y`` is a module),
    imports inside functions or ``if TYPE_CHECKING:``, and ``importlib.import_module`` /
    ``__import__`` with a literal name.
    """
    package = module if is_package else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                found.add(str(first.value))
    return found


def package_modules() -> dict[str, set[str]]:
    """Every module of the package → the modules it imports (first- and third-party)."""
    modules: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = imported_modules(path.read_text(), name, is_package=is_package)
    return modules


MODULES: Final = package_modules()


def layer_of(module: str) -> str | None:
    """The layer ``module`` belongs to: the longest table entry that is its name or a
    package it is in (the root only by its exact name)."""
    matches = [
        layer
        for layer in ALLOWED
        if module == layer or (layer != ROOT and module.startswith(layer + "."))
    ]
    return max(matches, key=len, default=None)


def first_party(name: str, known: Iterable[str]) -> str | None:
    """The package module ``name`` refers to (``a.b.attr`` → ``a.b``), or ``None`` if
    ``name`` is not part of convex_cdc."""
    if name != ROOT and not name.startswith(ROOT + "."):
        return None
    modules = set(known)
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def layer_violations(module: str, imports: Iterable[str]) -> list[str]:
    """One line per first-party import of ``module`` that its layer does not allow."""
    own = layer_of(module)
    if own is None:
        return [f"{module} belongs to no layer"]
    problems = []
    for name in sorted(imports):
        target = first_party(name, MODULES)
        if target is None or target == module:
            continue
        theirs = layer_of(target)
        if theirs != own and theirs not in ALLOWED[own]:
            problems.append(f"{module} ({own}) imports {target} ({theirs})")
    return problems


def forbidden_imports(module: str, imports: Iterable[str]) -> set[str]:
    """The third-party imports of ``module`` its layer forbids."""
    layer = layer_of(module)
    banned = FORBIDDEN[layer] if layer is not None else frozenset()
    return {m for m in imports if any(m == b or m.startswith(b + ".") for b in banned)}


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports (itself left out)."""
    return {
        module: {t for name in imports if (t := first_party(name, MODULES)) not in (None, module)}
        for module, imports in MODULES.items()
    }


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle, as ``[a, b, …, a]``, or ``None`` if the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


# --- the package ------------------------------------------------------------------------


def test_every_module_belongs_to_a_layer() -> None:
    assert [m for m in MODULES if layer_of(m) is None] == []
    assert {"convex_cdc.core.client", "convex_cdc.target_s3.raw.change_log"} <= MODULES.keys()


def test_every_layer_of_the_table_exists_and_has_its_third_party_rules() -> None:
    assert [layer for layer in ALLOWED if layer not in MODULES] == []
    assert FORBIDDEN.keys() == ALLOWED.keys()
    for allowed in ALLOWED.values():
        assert allowed <= ALLOWED.keys()


def test_every_first_party_import_is_one_the_layer_table_allows() -> None:
    problems = [p for module, imports in MODULES.items() for p in layer_violations(module, imports)]
    assert problems == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_third_party_package_its_layer_forbids(module: str) -> None:
    assert forbidden_imports(module, MODULES[module]) == set()


def test_no_module_takes_part_in_an_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


# --- the scan would catch a violation ---------------------------------------------------


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("convex_cdc.core.example", "from ..target_s3 import layout"),
        ("convex_cdc.core.example", "from ..platform.databricks import bronze"),
        ("convex_cdc.core.example", "from .. import devserver"),
        ("convex_cdc.core.example", "from convex_cdc.commands.connection import connect"),
        ("convex_cdc.core.example", "def f():\n    from convex_cdc import logs\n"),
        ("convex_cdc.target_s3.example", "from convex_cdc.commands import sync"),
        ("convex_cdc.target_s3.example", "from .raw import change_log"),
        ("convex_cdc.target_s3.raw.example", "from convex_cdc.target_s3.staging import state"),
        ("convex_cdc.target_s3.raw.example", "from ..publish.manifest import Manifest"),
        ("convex_cdc.target_s3.staging.example", "from ..publish import manifest"),
        ("convex_cdc.target_s3.staging.example", "import convex_cdc.platform.databricks.bronze"),
        ("convex_cdc.platform.databricks.example", "from convex_cdc.target_s3 import layout"),
        # The circle cli → commands → platform → cli the wheel entry point used to close:
        ("convex_cdc.platform.databricks.example", "def main():\n    from convex_cdc import cli\n"),
        ("convex_cdc.devserver.example", "from convex_cdc.core import errors"),
        ("convex_cdc.devserver.example", "import importlib\nimportlib.import_module('convex_cdc')"),
        (
            "convex_cdc.logs",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import convex_cdc.commands\n",
        ),
        ("convex_cdc.commands.example", "from convex_cdc import cli"),
        ("convex_cdc.newpackage.example", "import json"),
    ],
)
def test_the_scan_would_catch_a_layer_violation(module: str, source: str) -> None:
    imports = imported_modules(source, module)
    assert layer_violations(module, imports) != []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("convex_cdc.core.example", "from . import errors"),
        ("convex_cdc.core.client", "from convex_cdc import __version__"),
        ("convex_cdc.target_s3.staging.example", "from ..raw.change_log import RawChangeLog"),
        ("convex_cdc.target_s3.publish.example", "from convex_cdc.target_s3.staging import state"),
        ("convex_cdc.target_s3.raw.example", "from convex_cdc.target_s3.layout import X"),
        ("convex_cdc.commands.example", "from convex_cdc.platform.databricks import silver"),
        ("convex_cdc.cli", "from convex_cdc.commands import registry"),
    ],
)
def test_the_scan_lets_allowed_layer_imports_through(module: str, source: str) -> None:
    assert layer_violations(module, imported_modules(source, module)) == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("convex_cdc.core.example", "import boto3"),
        ("convex_cdc.core.example", "import botocore.session"),
        ("convex_cdc.core.example", "from deltalake import DeltaTable"),
        ("convex_cdc.core.example", "from pyarrow import fs"),
        ("convex_cdc.core.example", "import pyarrow.fs as pafs"),
        ("convex_cdc.core.example", "def f():\n    import obstore\n"),
        (
            "convex_cdc.core.example",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import s3fs\n",
        ),
        ("convex_cdc.core.example", "import importlib\nimportlib.import_module('fsspec')"),
        ("convex_cdc.core.example", "__import__('pyspark.sql')"),
        ("convex_cdc.core.example", "import click"),
        ("convex_cdc.target_s3.staging.example", "from deltalake import write_deltalake"),
        ("convex_cdc.target_s3.raw.example", "import obstore"),
        ("convex_cdc.target_s3.publish.example", "from databricks.sdk.runtime import dbutils"),
        ("convex_cdc.platform.databricks.example", "import obstore.store"),
        ("convex_cdc.commands.example", "from deltalake.exceptions import DeltaError"),
    ],
)
def test_the_scan_would_catch_a_forbidden_third_party_import(module: str, source: str) -> None:
    assert forbidden_imports(module, imported_modules(source, module)) != set()


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("convex_cdc.core.example", "import pyarrow as pa"),
        ("convex_cdc.core.example", "from pyarrow import compute"),
        ("convex_cdc.core.example", "import httpx"),
        ("convex_cdc.target_s3.publish.example", "import obstore"),
        ("convex_cdc.platform.databricks.example", "from deltalake import DeltaTable"),
        ("convex_cdc.commands.example", "import click"),
    ],
)
def test_the_scan_lets_allowed_third_party_imports_through(module: str, source: str) -> None:
    assert forbidden_imports(module, imported_modules(source, module)) == set()


def test_relative_imports_of_a_package_init_resolve_inside_the_package() -> None:
    found = imported_modules("from .raw import change_log", "convex_cdc.target_s3", is_package=True)
    assert "convex_cdc.target_s3.raw.change_log" in found


def test_the_cycle_finder_reports_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
