"""core/ stays about Convex: it never imports a target, a platform, the devserver or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import convex_cdc.core

CORE = Path(convex_cdc.core.__file__).parent
FORBIDDEN = (
    "convex_cdc.target_s3",
    "convex_cdc.platform",
    "convex_cdc.devserver",
    "convex_cdc.commands",
    "boto3",
    "botocore",
    "deltalake",
    "obstore",
    "pyarrow.fs",
    "databricks",
    "pyspark",
    "s3fs",
    "fsspec",
)


def imported_modules(source: str, module: str) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, relative imports resolved.

    Counts ``import x``, ``from x import y`` (also ``x.y``, in case ``y`` is a module),
    imports inside functions or ``if TYPE_CHECKING:``, and ``importlib.import_module`` /
    ``__import__`` with a literal name.
    """
    package = module.rsplit(".", 1)[0]
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


def forbidden_in(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)}


def core_modules() -> list[tuple[str, Path]]:
    return [
        ("convex_cdc.core." + ".".join(path.relative_to(CORE).with_suffix("").parts), path)
        for path in sorted(CORE.rglob("*.py"))
    ]


def test_the_scan_covers_every_core_module() -> None:
    names = {name for name, _ in core_modules()}
    assert {
        "convex_cdc.core.client",
        "convex_cdc.core.orchestrator",
        "convex_cdc.core.selection",
    } <= names


@pytest.mark.parametrize(
    ("module", "path"), core_modules(), ids=lambda v: str(v).rsplit(".", 1)[-1]
)
def test_no_core_module_imports_a_target_platform_devserver_or_cloud_sdk(
    module: str, path: Path
) -> None:
    assert forbidden_in(imported_modules(path.read_text(), module)) == set()


@pytest.mark.parametrize(
    "source",
    [
        "import boto3",
        "import botocore.session",
        "from deltalake import DeltaTable",
        "from pyarrow import fs",
        "import pyarrow.fs as pafs",
        "from ..target_s3 import layout",
        "from ..platform.databricks import x",
        "from .. import devserver",
        "from convex_cdc.commands.connection import connect",
        "def f():\n    import obstore\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import s3fs\n",
        "import importlib\nimportlib.import_module('fsspec')",
        "__import__('pyspark.sql')",
    ],
)
def test_the_scanner_would_catch_a_forbidden_import(source: str) -> None:
    assert forbidden_in(imported_modules(source, "convex_cdc.core.example")) != set()


@pytest.mark.parametrize(
    "source",
    ["import pyarrow as pa", "from pyarrow import compute", "from . import errors", "import httpx"],
)
def test_the_scanner_lets_allowed_imports_through(source: str) -> None:
    assert forbidden_in(imported_modules(source, "convex_cdc.core.example")) == set()
