"""The TOML config file: defaults for every flag, never secrets, typos refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from convex_cdc.cli import cli
from convex_cdc.commands.config_file import command_defaults, load_config
from convex_cdc.core.errors import ConfigError

GOOD = """
url = "https://happy-animal-123.convex.cloud"
dest = "./lake"
deploy_key_env = "MY_KEY"

[selection]
include = ["messages", "waitlist/*"]
exclude = ["users.ssn"]

[publish]
to = "s3://bucket/prefix"
keep = 3

[databricks]
warehouse = "s3://bucket/delta"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "convex-cdc.toml"
    path.write_text(text)
    return path


def test_a_config_file_becomes_the_default_of_every_command(tmp_path: Path) -> None:
    defaults = command_defaults(load_config(_write(tmp_path, GOOD)))
    assert defaults["sync"] == {
        "url": "https://happy-animal-123.convex.cloud",
        "deploy_key_env": "MY_KEY",
        "dest": "./lake",
        "include": ("messages", "waitlist/*"),
        "exclude": ("users.ssn",),
    }
    assert defaults["publish"]["to"] == "s3://bucket/prefix"
    assert defaults["publish"]["keep"] == 3
    assert defaults["run"]["to"] == "s3://bucket/prefix"
    assert defaults["databricks"]["extract"]["warehouse"] == "s3://bucket/delta"


def test_the_databricks_source_name_reaches_every_databricks_command(tmp_path: Path) -> None:
    text = GOOD.replace("[databricks]\n", '[databricks]\nsource = "prod_app"\n')
    databricks = command_defaults(load_config(_write(tmp_path, text)))["databricks"]

    for command in ("extract", "apply-silver", "render"):
        assert databricks[command]["source_name"] == "prod_app", command
        assert databricks[command]["warehouse"] == "s3://bucket/delta", command
    # Without a source name, apply-silver and render derive it from the deployment URL.
    assert databricks["apply-silver"]["url"] == "https://happy-animal-123.convex.cloud"
    assert databricks["render"]["convex_url"] == "https://happy-animal-123.convex.cloud"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('deploy_key = "prod:x|abc"', "looks like a secret"),
        ('[publish]\naws_secret_access_key = "x"', "looks like a secret"),
        ('dset = "./lake"', "unknown setting 'dset'"),
        ('[selection]\ninclude = "messages"', "must be a list of strings"),
        ("url = [", "not valid TOML"),
        ("[databricks]\nsource = 1", "databricks.source must be a string"),
        ("request_timeout = 0", "request_timeout must be a number of at least 1"),
        ('max_response_mb = "big"', "max_response_mb must be a number"),
    ],
)
def test_secrets_typos_and_bad_values_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(_write(tmp_path, text))


def test_flags_on_the_command_line_win_over_the_file(tmp_path: Path, monkeypatch: Any) -> None:
    config = _write(tmp_path, f'dest = "{tmp_path / "from-file"}"\n')
    runner = CliRunner()
    from_file = runner.invoke(cli, ["--config", str(config), "status", "--offline", "--json"])
    assert from_file.exit_code == 0, from_file.output
    assert str(tmp_path / "from-file") in from_file.output
    flag = tmp_path / "from-flag"
    from_flag = runner.invoke(
        cli, ["--config", str(config), "status", "--offline", "--json", "--dest", str(flag)]
    )
    assert from_flag.exit_code == 0, from_flag.output
    assert str(flag) in from_flag.output and "from-file" not in from_flag.output


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "nope.toml"), "status"])
    assert isinstance(result.exception, ConfigError)
    assert "nope.toml" in str(result.exception)


def test_a_key_in_deploy_key_env_is_refused_without_echoing_it(tmp_path: Path) -> None:
    key = "prod:happy-animal-123|" + "ab12" * 12
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, f'deploy_key_env = "{key}"\n'))
    text = caught.value.one_line()
    assert "deploy_key_env expects the name of the environment variable" in text
    assert key not in text and "ab12" * 12 not in text


def test_the_request_limits_can_come_from_the_file(tmp_path: Path) -> None:
    text = GOOD + "request_timeout = 60\nmax_response_mb = 64.5\n"
    # Top-level keys after a table belong to it in TOML: put them first.
    text = "request_timeout = 60\nmax_response_mb = 64.5\n" + GOOD
    defaults = command_defaults(load_config(_write(tmp_path, text)))
    for command in ("sync", "status", "verify", "inspect", "run"):
        assert defaults[command]["request_timeout"] == 60, command
        assert defaults[command]["max_response_mb"] == 64.5, command
    assert defaults["databricks"]["extract"]["request_timeout"] == 60
