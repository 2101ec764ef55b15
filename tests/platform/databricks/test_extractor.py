"""The extractor job's wheel entry point and its Databricks secret-scope hook."""

from __future__ import annotations

import sys
import types

import pytest

from convex_cdc.cli import databricks_extract
from convex_cdc.core.errors import ConfigError
from convex_cdc.platform.databricks.extractor import load_secret_scope


class _Secrets:
    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self.values = values

    def get(self, *, scope: str, key: str) -> str:
        try:
            return self.values[(scope, key)]
        except KeyError:
            raise RuntimeError(f"secret {key} does not exist in scope {scope}") from None


def test_the_secret_scope_fills_the_deploy_key_variable_and_skips_missing_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = types.ModuleType("databricks.sdk.runtime")
    runtime.dbutils = types.SimpleNamespace(  # type: ignore[attr-defined]
        secrets=_Secrets({("convex", "deploy-key"): "prod:x|secret"})
    )
    monkeypatch.setitem(sys.modules, "databricks", types.ModuleType("databricks"))
    monkeypatch.setitem(sys.modules, "databricks.sdk", types.ModuleType("databricks.sdk"))
    monkeypatch.setitem(sys.modules, "databricks.sdk.runtime", runtime)
    env: dict[str, str] = {}

    done = load_secret_scope("convex", deploy_key_env="MY_KEY", environ=env)

    assert done == ["MY_KEY"]
    assert env == {"MY_KEY": "prod:x|secret"}


def test_the_wheel_entry_point_is_databricks_extract(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["convex-cdc-databricks-extract"])

    databricks_extract(["--help"])

    out = capsys.readouterr().out
    assert "Usage: convex-cdc databricks extract" in out
    assert "--secret-scope" in out and "--warehouse" in out


def test_the_secret_scope_off_databricks_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "databricks.sdk.runtime", None)  # import fails

    with pytest.raises(ConfigError, match="needs Databricks") as caught:
        load_secret_scope("convex", deploy_key_env="MY_KEY", environ={})

    assert "set MY_KEY" in caught.value.one_line()


def test_the_wheel_entry_point_reads_sys_argv_like_a_console_script(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["convex-cdc-databricks-extract", "--help"])

    databricks_extract()

    assert "Usage: convex-cdc databricks extract" in capsys.readouterr().out
