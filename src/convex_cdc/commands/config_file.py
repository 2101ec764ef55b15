"""The optional TOML config file: everything but secrets, as defaults for the flags.

Example (``convex-cdc.toml``)::

    url = "https://happy-animal-123.convex.cloud"
    dest = "./lake"
    deploy_key_env = "CONVEX_DEPLOY_KEY"     # the *name* of the variable, never the key
    request_timeout = 330                    # seconds one request to Convex may take
    max_response_mb = 256                    # the largest Convex answer read

    [selection]
    include = ["messages", "users", "waitlist/*"]
    exclude = ["users.ssn"]

    [publish]
    to = "s3://analytics/convex"
    endpoint_url = "https://s3.eu-west-1.amazonaws.com"
    keep = 10
    include_raw = false

    [databricks]
    warehouse = "s3://analytics/convex-delta"
    source = "prod_app"                      # the deployment's name in the warehouse

Flags given on the command line win over the file. Keys the file does not know are
refused (a typo should not silently do nothing), and so is anything that looks like a
secret: the deploy key lives only in the environment.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from convex_cdc.core.errors import ConfigError

_TOP_LEVEL: Final = {
    "url",
    "dest",
    "deploy_key_env",
    "request_timeout",
    "max_response_mb",
    "selection",
    "publish",
    "databricks",
}
_NUMBERS: Final = frozenset({"request_timeout", "max_response_mb"})
_SECTIONS: Final[Mapping[str, frozenset[str]]] = {
    "selection": frozenset({"include", "exclude"}),
    "publish": frozenset({"to", "endpoint_url", "keep", "include_raw"}),
    "databricks": frozenset({"warehouse", "endpoint_url", "source"}),
}
_SECRET_HINTS: Final = ("key", "secret", "token", "password")


def load_config(path: Path) -> dict[str, Any]:
    """Parse and validate a config file.

    Raises:
        ConfigError: unreadable, not TOML, unknown keys, or a secret in the file.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", hint="check --config") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    _validate(data, path)
    return data


def command_defaults(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Click ``default_map`` for every subcommand, from a validated config."""
    source = {k: config[k] for k in ("url", "deploy_key_env", *sorted(_NUMBERS)) if k in config}
    dest = {"dest": config["dest"]} if "dest" in config else {}
    selection = config.get("selection", {})
    select = {k: tuple(selection[k]) for k in ("include", "exclude") if k in selection}
    publish = dict(config.get("publish", {}))
    databricks = dict(config.get("databricks", {}))
    if "source" in databricks:  # the flag is --source, its parameter source_name
        databricks["source_name"] = databricks.pop("source")
    url = {"url": config["url"]} if "url" in config else {}
    convex_url = {"convex_url": config["url"]} if "url" in config else {}
    sync = {**source, **dest, **select}
    return {
        "sync": sync,
        "materialize": dict(dest),
        "publish": {**dest, **publish},
        "run": {**sync, **publish},
        "status": {**source, **dest},
        "verify": {**source, **dest, **select},
        "inspect": {**source, **select},
        "databricks": {
            "extract": {**source, **select, **databricks},
            # apply-silver reads --url only to derive the source name; render's is convex_url.
            "apply-silver": {**url, **databricks},
            "render": {**convex_url, **databricks},
        },
    }


def _validate(data: Mapping[str, Any], path: Path) -> None:
    for key, value in data.items():
        if key not in _TOP_LEVEL:
            raise _unknown(path, key)
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            for inner in value:
                if inner not in _SECTIONS[key]:
                    raise _unknown(path, f"{key}.{inner}")
        elif key in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
                raise ConfigError(f"{path}: {key} must be a number of at least 1")
        elif not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must be a string")
    key_env = data.get("deploy_key_env")
    if isinstance(key_env, str):
        # Imported here: the connection module brings the HTTP client with it.
        from convex_cdc.commands.connection import key_env_problem
        from convex_cdc.logs import register_secret

        problem = key_env_problem(key_env)
        if problem is not None:
            register_secret(key_env.strip())
            raise ConfigError(
                f"{path}: deploy_key_env {problem}",
                hint='write deploy_key_env = "CONVEX_DEPLOY_KEY" (the variable\'s name) and '
                "keep the key in that variable, never in the file",
            )
    for section in ("selection",):
        for name in ("include", "exclude"):
            patterns = data.get(section, {}).get(name, [])
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise ConfigError(f"{path}: {section}.{name} must be a list of strings")
    for name, value in data.get("databricks", {}).items():
        if not isinstance(value, str):
            raise ConfigError(f"{path}: databricks.{name} must be a string")


def _unknown(path: Path, key: str) -> ConfigError:
    if any(hint in key.lower() for hint in _SECRET_HINTS) and key != "deploy_key_env":
        return ConfigError(
            f"{path}: {key!r} looks like a secret; secrets never go in the config file",
            hint="put the deploy key in CONVEX_DEPLOY_KEY (or the variable named by "
            "deploy_key_env) and cloud credentials in the standard AWS variables",
        )
    return ConfigError(f"{path}: unknown setting {key!r}", hint="see `convex-cdc --help`")
