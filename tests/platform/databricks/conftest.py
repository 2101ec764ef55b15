"""Fixtures for the Databricks/delta tests: a fresh local warehouse per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.platform.databricks.change_batches import SOURCE_NAME


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    """An empty local warehouse, as seen by the source of ``change_batches.SOURCE``."""
    return Warehouse.from_uri(str(tmp_path / "warehouse"), source_name=SOURCE_NAME)
