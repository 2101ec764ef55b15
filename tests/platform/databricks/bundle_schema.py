"""Offline validation of a rendered bundle against the Databricks CLI's configuration schema.

The CLI (a Go binary) cannot run in the test suite, so the check is in two parts:

- **Resources** (``resources.jobs``, ``resources.pipelines``, ``resources.dashboards``)
  are loaded into the typed models of the ``databricks-bundles`` package, which are
  generated from the same schema as the CLI's. A misspelled or unknown field, a value
  outside an enum or a value of the wrong type raises. A set field that the models
  document as ``[DEPRECATED]`` is reported as well.
- **The rest of the configuration** (``bundle``, ``include``, ``artifacts``,
  ``variables``, ``workspace``, ``run_as``, ``targets``) has no model in that package.
  :data:`ROOT` below transcribes the field names of those objects from the CLI's bundle
  JSON schema (CLI 1.13), plus the values the CLI accepts where that schema only says
  "string": ``mode`` (``development`` or ``production``), the artifact ``type`` and the
  ``databricks_cli_version`` constraint syntax. Fields convex-cdc never renders (``git``,
  ``presets``, ``sync``, ``permissions``, ...) are accepted without a closer look.

On top of the schema, :func:`bundle_problems` checks what ``bundle validate`` would
resolve: every ``include`` glob names rendered files and every rendered resource file is
included, every ``${var.X}`` is declared, every declared variable is used, and every
``${resources.<kind>.<key>.…}`` reference names a resource of the bundle.
"""

from __future__ import annotations

import ast
import fnmatch
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, fields, is_dataclass
from functools import cache
from typing import Any, Final

import yaml
from databricks.bundles.dashboards import Dashboard
from databricks.bundles.jobs import Job, JobRunAs
from databricks.bundles.pipelines import Pipeline

Check = Callable[[Any, str], list[str]]
"""A check of one value at a path: the problems found, empty if none."""

_REFERENCE: Final = re.compile(r"\$\{([A-Za-z_][\w.\-\[\]]*)\}")
_WHOLE_REFERENCE: Final = re.compile(r"\$\{[A-Za-z_][\w.\-\[\]]*\}")
# The CLI's accepted `databricks_cli_version` syntax: `>= 1.2.3`, `1.2.*`, `>= 1.0.0, < 2.0.0`.
_VERSION: Final = r"(\d+\.\d+\.\d+(-\w+)?|\d+\.\d+\.\*|\d+\.\*)"
_OPERATOR: Final = r"(>=|<=|>|<|!=)?"
_CLI_VERSION_CONSTRAINT: Final = re.compile(
    rf"^{_OPERATOR} ?{_VERSION}(, {_OPERATOR} ?{_VERSION})?$"
)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _at(path: str, problem: str) -> str:
    return f"{path}: {problem}" if path else problem


def _is_reference(value: Any) -> bool:
    """``${...}`` alone: the CLI substitutes it before checking the value's type."""
    return isinstance(value, str) and _WHOLE_REFERENCE.fullmatch(value) is not None


def _scalar(kind: type, name: str) -> Check:
    def check(value: Any, path: str) -> list[str]:
        if isinstance(value, kind) or _is_reference(value):
            return []
        return [_at(path, f"expected {name}, got {value!r}")]

    return check


STRING: Final = _scalar(str, "a string")
BOOL: Final = _scalar(bool, "a boolean")


def _anything(value: Any, path: str) -> list[str]:
    return []


ANY: Final = _anything
"""For the fields convex-cdc never renders."""


def one_of(*allowed: str) -> Check:
    def check(value: Any, path: str) -> list[str]:
        if value in allowed or _is_reference(value):
            return []
        return [_at(path, f"{value!r} is not one of {', '.join(allowed)}")]

    return check


def cli_version_constraint(value: Any, path: str) -> list[str]:
    if isinstance(value, str) and _CLI_VERSION_CONSTRAINT.fullmatch(value):
        return []
    return [_at(path, f"{value!r} is not a version constraint the CLI accepts")]


def obj(properties: Mapping[str, Check], *, required: frozenset[str] = frozenset()) -> Check:
    def check(value: Any, path: str) -> list[str]:
        if not isinstance(value, dict):
            return [_at(path, f"expected a mapping, got {value!r}")]
        problems = [_at(path, f"missing required field {name!r}") for name in required - set(value)]
        for key, item in value.items():
            if key not in properties:
                problems.append(_at(path, f"unknown field {key!r}"))
            else:
                problems += properties[key](item, _join(path, key))
        return problems

    return check


def map_of(item: Check) -> Check:
    def check(value: Any, path: str) -> list[str]:
        if not isinstance(value, dict):
            return [_at(path, f"expected a mapping, got {value!r}")]
        return [p for key, v in value.items() for p in item(v, _join(path, key))]

    return check


def list_of(item: Check) -> Check:
    def check(value: Any, path: str) -> list[str]:
        if not isinstance(value, list):
            return [_at(path, f"expected a list, got {value!r}")]
        return [p for i, v in enumerate(value) for p in item(v, f"{path}[{i}]")]

    return check


def model(cls: Any) -> Check:
    """A check by a ``databricks-bundles`` model: loads, then looks for deprecated fields."""

    def check(value: Any, path: str) -> list[str]:
        try:
            loaded = cls.from_dict(value)
        except (ValueError, TypeError, KeyError) as exc:
            return [_at(path, str(exc))]
        return [
            _at(_join(path, where), "deprecated field") for where in _deprecated_fields_set(loaded)
        ]

    return check


@cache
def _deprecated_fields(cls: type) -> frozenset[str]:
    """The fields of a generated model whose docstring starts with ``[DEPRECATED]``."""
    (body,) = ast.parse(inspect.getsource(cls)).body
    assert isinstance(body, ast.ClassDef)
    names = set()
    for field_node, doc in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(field_node, ast.AnnAssign)
            and isinstance(field_node.target, ast.Name)
            and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)
            and doc.value.value.strip().startswith("[DEPRECATED]")
        ):
            names.add(field_node.target.id)
    return frozenset(names)


def _deprecated_fields_set(value: Any, path: str = "") -> Iterator[str]:
    if is_dataclass(value) and not isinstance(value, type):
        deprecated = _deprecated_fields(type(value))
        for field in fields(value):
            item = getattr(value, field.name)
            unset = field.default if field.default_factory is MISSING else field.default_factory()
            if field.name in deprecated and item != unset:
                yield _join(path, field.name)
            yield from _deprecated_fields_set(item, _join(path, field.name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _deprecated_fields_set(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _deprecated_fields_set(item, _join(path, key))


RESOURCES: Final = obj(
    {
        "dashboards": map_of(model(Dashboard)),
        "jobs": map_of(model(Job)),
        "pipelines": map_of(model(Pipeline)),
    }
)
"""The resource kinds convex-cdc renders; any other kind is reported as unknown."""
_WORKSPACE_STRINGS: Final = [
    "account_id",
    "artifact_path",
    "auth_type",
    "azure_client_id",
    "azure_environment",
    "azure_login_app_id",
    "azure_tenant_id",
    "azure_workspace_resource_id",
    "client_id",
    "file_path",
    "google_service_account",
    "host",
    "profile",
    "resource_path",
    "root_path",
    "state_path",
    "workspace_id",
]
WORKSPACE: Final = obj({**dict.fromkeys(_WORKSPACE_STRINGS, STRING), "azure_use_msi": BOOL})
ARTIFACT: Final = obj(
    {
        "build": STRING,
        "dynamic_version": BOOL,
        "executable": one_of("bash", "sh", "cmd"),
        "files": list_of(obj({"source": STRING}, required=frozenset({"source"}))),
        "path": STRING,
        "type": one_of("whl", "jar"),
    }
)
_LOOKUP_KINDS: Final = [
    "alert",
    "cluster",
    "cluster_policy",
    "dashboard",
    "instance_pool",
    "job",
    "metastore",
    "notification_destination",
    "pipeline",
    "query",
    "service_principal",
    "warehouse",
]
VARIABLE: Final = obj(
    {
        "default": ANY,
        "description": STRING,
        "lookup": obj(dict.fromkeys(_LOOKUP_KINDS, STRING)),
        "type": one_of("complex"),
    }
)


def _target_variable(value: Any, path: str) -> list[str]:
    """A target sets a variable with a bare value or with a full variable definition."""
    return VARIABLE(value, path) if isinstance(value, dict) else []


BUNDLE: Final = obj(
    {
        "name": STRING,
        "databricks_cli_version": cli_version_constraint,
        "cluster_id": STRING,
        "deployment": ANY,
        "engine": one_of("terraform", "direct"),
        "git": ANY,
        "uuid": STRING,
    },
    required=frozenset({"name"}),
)
RUN_AS: Final = model(JobRunAs)
TARGET: Final = obj(
    {
        "artifacts": map_of(ARTIFACT),
        "bundle": ANY,
        "cluster_id": STRING,
        "default": BOOL,
        "git": ANY,
        "mode": one_of("development", "production"),
        "permissions": ANY,
        "presets": ANY,
        "resources": RESOURCES,
        "run_as": RUN_AS,
        "sync": ANY,
        "variables": map_of(_target_variable),
        "workspace": WORKSPACE,
    }
)
ROOT: Final = obj(
    {
        "artifacts": map_of(ARTIFACT),
        "bundle": BUNDLE,
        "experimental": ANY,
        "include": list_of(STRING),
        "permissions": ANY,
        "presets": ANY,
        "python": ANY,
        "resources": RESOURCES,
        "run_as": RUN_AS,
        "scripts": ANY,
        "sync": ANY,
        "targets": map_of(TARGET),
        "variables": map_of(VARIABLE),
        "workspace": WORKSPACE,
    }
)
"""A configuration file: ``databricks.yml`` and every file it includes."""


def bundle_configuration(files: Mapping[str, str]) -> dict[str, Any]:
    """``databricks.yml`` and the files it includes, each parsed: path → mapping."""
    root = yaml.safe_load(files["databricks.yml"])
    included = {
        name
        for pattern in root.get("include", [])
        for name in files
        if fnmatch.fnmatch(name, pattern)
    }
    return {name: yaml.safe_load(files[name]) for name in ["databricks.yml", *sorted(included)]}


def bundle_problems(files: Mapping[str, str]) -> list[str]:
    """Every problem the CLI would report in the rendered ``files`` (empty: none)."""
    config = bundle_configuration(files)
    problems = [f"{name}: {p}" for name, content in config.items() for p in ROOT(content, "")]
    root = config["databricks.yml"]
    for pattern in root.get("include", []):
        if not any(fnmatch.fnmatch(name, pattern) for name in files):
            problems.append(f"databricks.yml: include {pattern!r} names no rendered file")
    for name in files:
        if name.endswith(".yml") and name not in config:
            problems.append(f"{name}: rendered, but databricks.yml does not include it")

    declared = set(root.get("variables", {}))
    used = {ref.split(".")[1] for ref in _references(config) if ref.startswith("var.")}
    problems += [f"${{var.{name}}} is used but not declared" for name in sorted(used - declared)]
    problems += [f"variable {name!r} is declared but not used" for name in sorted(declared - used)]
    for target, settings in root.get("targets", {}).items():
        for name in set(settings.get("variables", {})) - declared:
            problems.append(f"targets.{target} sets the undeclared variable {name!r}")

    resources = {
        (kind, key)
        for content in config.values()
        for kind, entries in content.get("resources", {}).items()
        for key in entries
    }
    for ref in _references(config):
        parts = ref.split(".")
        if parts[0] == "resources" and (parts[1], parts[2]) not in resources:
            problems.append(f"${{{ref}}} names no resource of the bundle")
    return problems


def unassigned_variables(files: Mapping[str, str], target: str) -> set[str]:
    """The variables ``target`` leaves without a value: ``bundle deploy -t target`` needs a
    ``--var`` (or ``BUNDLE_VAR_<name>``) for each."""
    root = yaml.safe_load(files["databricks.yml"])
    overrides = root["targets"][target].get("variables", {})
    return {
        name
        for name, variable in root.get("variables", {}).items()
        if "default" not in variable and name not in overrides
    }


def target_variable(files: Mapping[str, str], target: str, name: str) -> Any:
    """The value ``target`` gives the variable ``name`` (its override, else the default)."""
    root = yaml.safe_load(files["databricks.yml"])
    overrides = root["targets"][target].get("variables", {})
    if name in overrides:
        value = overrides[name]
        return value["default"] if isinstance(value, dict) else value
    return root["variables"][name]["default"]


def _references(config: Mapping[str, Any]) -> Iterator[str]:
    """Every ``${...}`` reference in the configuration, without the braces."""

    def strings(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for item in node.values():
                yield from strings(item)
        elif isinstance(node, list):
            for item in node:
                yield from strings(item)

    for text in strings(list(config.values())):
        yield from _REFERENCE.findall(text)
