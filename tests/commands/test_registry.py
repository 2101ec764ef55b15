"""Subcommands are imported only when they run; a missing extra is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import click
import pytest
from click.testing import CliRunner

from convex_cdc.commands import registry
from convex_cdc.core.errors import ConfigError


def test_starting_the_cli_imports_no_command() -> None:
    code = (
        "import sys, convex_cdc.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('convex_cdc.commands.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        out.stdout.strip() == "['convex_cdc.commands.config_file', 'convex_cdc.commands.registry']"
    )


def test_every_registered_command_loads_under_its_name() -> None:
    for name in registry.command_names():
        command = registry.load_command(name)
        assert isinstance(command, click.Command) and command.name == name
    assert registry.load_command("nope") is None


def test_a_command_whose_extra_is_missing_fails_naming_it(monkeypatch: Any) -> None:
    def missing(name: str) -> Any:
        raise ModuleNotFoundError("No module named 'obstore'", name="obstore")

    monkeypatch.setattr("convex_cdc.commands.registry.importlib.import_module", missing)
    command = registry.load_command("publish")
    assert command is not None
    result = CliRunner().invoke(command, ["--dest", "x", "--to", "y"])
    assert isinstance(result.exception, ConfigError)
    assert result.exception.exit_code == 2
    assert "`convex-cdc publish` needs the optional s3 dependencies" in str(result.exception)
    assert "pip install 'convex-cdc[s3]'" in str(result.exception)


def test_other_missing_modules_are_not_blamed_on_an_extra(monkeypatch: Any) -> None:
    def missing(name: str) -> Any:
        raise ModuleNotFoundError("No module named 'somethingelse'", name="somethingelse")

    monkeypatch.setattr("convex_cdc.commands.registry.importlib.import_module", missing)
    with pytest.raises(ModuleNotFoundError):
        registry.load_command("sync")
