"""Fixtures for the Databricks/delta tests: a fresh local warehouse per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from convex_cdc.platform.databricks.warehouse import Warehouse


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    """An empty local warehouse."""
    return Warehouse.from_uri(str(tmp_path / "warehouse"))
