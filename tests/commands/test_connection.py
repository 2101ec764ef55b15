"""--url/--deploy-key-env plumbing: the key only ever comes from the environment."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from convex_cdc.commands.connection import (
    RequestLimits,
    connect,
    request_limits,
    source_options,
)
from convex_cdc.core.errors import ConfigError
from convex_cdc.logs import redact_secrets

URL = "https://happy-animal-123.convex.cloud"
KEY = "prod:happy-animal-123|" + "ab12" * 12


def test_connect_reads_the_key_from_the_named_variable_and_registers_it_for_redaction() -> None:
    with connect(URL, "MY_KEY", environ={"MY_KEY": f"  {KEY}\n"}) as client:
        assert client.deployment_url == URL
    assert "ab12" * 12 not in redact_secrets(f"key={KEY}")
    assert redact_secrets("ab12" * 12) == "***"  # the secret half alone too


@pytest.mark.parametrize(
    ("url", "key_env", "environ", "problem", "fix"),
    [
        (None, "CONVEX_DEPLOY_KEY", {"CONVEX_DEPLOY_KEY": KEY}, "no deployment URL", "CONVEX_URL"),
        (URL, "CONVEX_DEPLOY_KEY", {}, "CONVEX_DEPLOY_KEY is not set", "export CONVEX_DEPLOY_KEY="),
        (URL, "OTHER", {"CONVEX_DEPLOY_KEY": KEY}, "OTHER is not set", "export OTHER="),
        (URL, "CONVEX_DEPLOY_KEY", {"CONVEX_DEPLOY_KEY": "   "}, "is not set", "Deploy keys"),
        (URL, "not a name", {}, "expects the name of the environment variable", "export"),
        ("ftp://x", "K", {"K": KEY}, "deployment URL", "--url"),
    ],
)
def test_missing_or_bad_inputs_are_config_errors_with_a_fix(
    url: str | None, key_env: str, environ: dict[str, str], problem: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        connect(url, key_env, environ=environ)
    assert problem in caught.value.message
    assert fix in (caught.value.hint or "")
    assert KEY not in str(caught.value)


def test_source_options_take_the_url_from_the_environment_and_never_the_key() -> None:
    seen: dict[str, object] = {}

    @click.command()
    @source_options
    def probe(url: str | None, deploy_key_env: str) -> None:
        seen.update(url=url, deploy_key_env=deploy_key_env)

    runner = CliRunner()
    result = runner.invoke(probe, [], env={"CONVEX_URL": URL})
    assert result.exit_code == 0, result.output
    assert seen == {"url": URL, "deploy_key_env": "CONVEX_DEPLOY_KEY"}
    result = runner.invoke(probe, ["--url", "http://127.0.0.1:3210", "--deploy-key-env", "K2"])
    assert seen == {"url": "http://127.0.0.1:3210", "deploy_key_env": "K2"}
    help_text = runner.invoke(probe, ["--help"]).output
    assert "--deploy-key-env NAME" in help_text and "--deploy-key " not in help_text


@pytest.mark.parametrize(
    "value",
    [KEY, "ab12" * 12 + "|x", "ab12" * 12, "deploy key with spaces"],
    ids=["whole key", "key-like", "secret half", "spaces"],
)
def test_a_key_given_as_the_variable_name_is_never_echoed(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        connect(URL, value, environ={})
    text = caught.value.one_line()
    assert value not in text and "ab12" * 12 not in text
    assert "not the key" in text or "could be a key" in text
    assert redact_secrets(f"seen: {value}") == "seen: ***"  # and never in a log line either


@pytest.mark.parametrize("where", ["flag", "config file"])
def test_a_key_as_deploy_key_env_is_one_error_line_without_the_key(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from convex_cdc.cli import main

    args = ["sync", "--dest", str(tmp_path / "lake"), "--url", URL]
    if where == "flag":
        args += ["--deploy-key-env", KEY]
    else:
        config = tmp_path / "convex-cdc.toml"
        config.write_text(f'deploy_key_env = "{KEY}"\n')
        args = ["--config", str(config), *args]
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    assert exited.value.code == 2
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "expects the name of the environment variable" in errors[0]
    assert KEY not in captured.err + captured.out and "ab12" * 12 not in captured.err


def test_the_request_limits_reach_connect_through_the_command_line() -> None:
    seen: list[RequestLimits] = []

    @click.command()
    @source_options
    def probe(url: str | None, deploy_key_env: str) -> None:
        seen.append(request_limits())

    runner = CliRunner()
    assert runner.invoke(probe, []).exit_code == 0
    assert runner.invoke(probe, ["--request-timeout", "5", "--max-response-mb", "2"]).exit_code == 0
    result = runner.invoke(probe, [], env={"CONVEX_CDC_REQUEST_TIMEOUT": "7"})
    assert result.exit_code == 0
    assert seen == [RequestLimits(), RequestLimits(5.0, 2.0), RequestLimits(7.0)]
    assert runner.invoke(probe, ["--request-timeout", "0"]).exit_code == 2
    help_text = runner.invoke(probe, ["--help"]).output
    assert "--request-timeout SECONDS" in help_text and "--max-response-mb MB" in help_text
