"""--url/--deploy-key-env plumbing: the key only ever comes from the environment."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from convex_cdc.commands.connection import connect, source_options
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
        (URL, "not a name", {}, "not an environment variable name", "--deploy-key-env"),
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
